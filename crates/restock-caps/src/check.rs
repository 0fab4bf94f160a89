//! Checking a batch of texts against their caps (the phases of the crate header), and peeking
//! at when a request would go without taking anything.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::bucket::{rate_span_ceil, Bucket, Shape};
use crate::key::{bucket_key, validate_name, Scope};
use crate::script::{self, parse_take, Arg, Call, Taken, REFUND_LUA, TAKE_LUA};
use crate::{Caps, CapsError};

/// One cap on a text: a bucket of a scope, under a name stable across configuration changes
/// (changing the capacity keeps the bucket's history; changing the name starts afresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub scope: Scope,
    pub name: String,
    pub bucket: Bucket,
}

impl Limit {
    pub fn new(scope: Scope, name: impl Into<String>, bucket: Bucket) -> Self {
        Self {
            scope,
            name: name.into(),
            bucket,
        }
    }
}

/// One text to send: the caps it must fit in, all taken or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapRequest {
    /// Whose text it is (the phone): its limits are checked and debited by one atomic script,
    /// after the shared ones.
    pub recipient: Scope,
    /// The recipient's own limits and shared ones (other scopes: sender, tenant), in the order
    /// [`CapAnswer::Denied::limit`] refers to.
    pub limits: Vec<Limit>,
}

impl CapRequest {
    pub fn new(recipient: Scope) -> Self {
        Self {
            recipient,
            limits: Vec::new(),
        }
    }

    /// Adds a limit of the recipient itself (e.g. the phone's 3 per 24 h).
    pub fn own(mut self, name: impl Into<String>, bucket: Bucket) -> Self {
        self.limits
            .push(Limit::new(self.recipient.clone(), name, bucket));
        self
    }

    /// Adds a limit shared with other recipients (a sender's throughput, a tenant's budget).
    pub fn shared(mut self, scope: Scope, name: impl Into<String>, bucket: Bucket) -> Self {
        self.limits.push(Limit::new(scope, name, bucket));
        self
    }
}

/// The decision on one [`CapRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapAnswer {
    /// Every limit took one token: send.
    Granted,
    /// Nothing was taken. `retry_at` (Redis's clock) is when `limit` (an index into the
    /// request's limits, the one that frees last) has room, counting the requests of the same
    /// batch queued before this one; another caller may take it first, so it is a time to ask
    /// again, not a promise.
    Denied {
        retry_at: DateTime<Utc>,
        limit: usize,
    },
}

impl CapAnswer {
    pub fn is_granted(&self) -> bool {
        matches!(self, CapAnswer::Granted)
    }
}

/// What a granted request took from its recipient's own limits (the phone's caps), kept so
/// that a text that is never sent can give its tokens back ([`Caps::give_back`]): a text
/// given back must not cost the shopper one of their texts of the day. The shared limits
/// (sender throughput, tenant budget) are not given back: their tokens only pace.
///
/// Not `Clone`: [`Caps::give_back`] takes it by value, so a grant is given back at most once.
#[derive(Debug)]
pub struct Grant {
    keys: Vec<String>,
    buckets: Vec<Bucket>,
    taken: Taken,
}

/// Refund calls of shared tokens not yet sent (see the crate header).
#[derive(Clone, Default)]
pub(crate) struct Owed(std::sync::Arc<std::sync::Mutex<Vec<Call<'static>>>>);

impl std::fmt::Debug for Owed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Owed")
            .field(&self.0.lock().map_or(0, |o| o.len()))
            .finish()
    }
}

impl Owed {
    fn owe(&self, calls: impl IntoIterator<Item = Call<'static>>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(calls);
    }

    fn take(&self) -> Vec<Call<'static>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The shared limits of one scope that some requests of the batch all need: one counted take.
#[derive(Debug)]
struct Group {
    keys: Vec<String>,
    buckets: Vec<Bucket>,
    /// How many requests of the batch need this group.
    demand: u64,
}

/// A batch sorted into the calls it needs.
#[derive(Debug)]
struct Plan {
    /// Per request, the indexes of its limits on the recipient's scope.
    own: Vec<Vec<usize>>,
    /// Per request, the keys of those limits, in the same order.
    own_keys: Vec<Vec<String>>,
    /// Per request, each shared group it needs with, for each key of the group, the index of
    /// the request's limit on that key.
    shared: Vec<Vec<(usize, Vec<usize>)>>,
    groups: Vec<Group>,
}

impl Plan {
    fn build(prefix: &str, requests: &[CapRequest]) -> Result<Self, CapsError> {
        let invalid = |r: usize, e: String| CapsError::Invalid(format!("request {r}: {e}"));
        let mut plan = Plan {
            own: Vec::with_capacity(requests.len()),
            own_keys: Vec::with_capacity(requests.len()),
            shared: Vec::with_capacity(requests.len()),
            groups: Vec::new(),
        };
        // A group is known by its scope and its (name, bucket)s, borrowed from the requests:
        // a batch of a thousand texts from one sender builds that sender's key once.
        type Signature<'a> = (&'a Scope, Vec<(&'a str, Bucket)>);
        let mut group_ids: HashMap<Signature<'_>, usize> = HashMap::new();
        for (r, request) in requests.iter().enumerate() {
            request.recipient.validate().map_err(|e| invalid(r, e))?;
            let limits = &request.limits;
            for (l, limit) in limits.iter().enumerate() {
                limit.scope.validate().map_err(|e| invalid(r, e))?;
                validate_name(&limit.name).map_err(|e| invalid(r, e))?;
                limit.bucket.validate().map_err(|e| invalid(r, e))?;
                // One script reading a key twice would count its room twice.
                let same_key = |o: &Limit| {
                    o.scope == limit.scope
                        && o.name == limit.name
                        && o.bucket.shape == limit.bucket.shape
                };
                if limits[..l].iter().any(same_key) {
                    let key = bucket_key(prefix, &limit.scope, &limit.name, limit.bucket.shape);
                    return Err(invalid(r, format!("limit {key} is listed twice")));
                }
            }

            let own: Vec<usize> = (0..limits.len())
                .filter(|&l| limits[l].scope == request.recipient)
                .collect();
            let own_keys = own
                .iter()
                .map(|&l| {
                    bucket_key(
                        prefix,
                        &limits[l].scope,
                        &limits[l].name,
                        limits[l].bucket.shape,
                    )
                })
                .collect();
            let mut shared = Vec::new();
            for (l, limit) in limits.iter().enumerate() {
                let scope = &limit.scope;
                if *scope == request.recipient || limits[..l].iter().any(|o| o.scope == *scope) {
                    continue;
                }
                let mut members: Vec<usize> = (l..limits.len())
                    .filter(|&m| limits[m].scope == *scope)
                    .collect();
                // A canonical order, so requests listing the same limits in another order
                // share one counted take.
                members.sort_by(|&a, &b| {
                    (&limits[a].name, limits[a].bucket.shape as u8)
                        .cmp(&(&limits[b].name, limits[b].bucket.shape as u8))
                });
                let signature = (
                    scope,
                    members
                        .iter()
                        .map(|&m| (limits[m].name.as_str(), limits[m].bucket))
                        .collect(),
                );
                let next = plan.groups.len();
                let g = *group_ids.entry(signature).or_insert(next);
                if g == next {
                    plan.groups.push(Group {
                        keys: members
                            .iter()
                            .map(|&m| {
                                bucket_key(prefix, scope, &limits[m].name, limits[m].bucket.shape)
                            })
                            .collect(),
                        buckets: members.iter().map(|&m| limits[m].bucket).collect(),
                        demand: 0,
                    });
                }
                plan.groups[g].demand += 1;
                shared.push((g, members));
            }
            plan.own.push(own);
            plan.own_keys.push(own_keys);
            plan.shared.push(shared);
        }
        Ok(plan)
    }

    fn own_take(&self, requests: &[CapRequest], r: usize, n: u64, quiet: bool) -> Call<'static> {
        let buckets: Vec<Bucket> = self.own[r]
            .iter()
            .map(|&l| requests[r].limits[l].bucket)
            .collect();
        take_call(self.own_keys[r].clone(), &buckets, n, quiet)
    }
}

fn shape_arg(bucket: &Bucket) -> Arg {
    Arg::Str(match bucket.shape {
        Shape::Window => "w",
        Shape::Rate => "r",
    })
}

/// A TAKE of `n` from every bucket of `keys`. `quiet`: the caller will never refund this take,
/// so a full grant is answered with its count alone (less for Redis to build and send).
pub(crate) fn take_call(
    keys: Vec<String>,
    buckets: &[Bucket],
    n: u64,
    quiet: bool,
) -> Call<'static> {
    let mut args = Vec::with_capacity(2 + 3 * buckets.len());
    args.push(Arg::Int(n as i64));
    args.push(Arg::Int(i64::from(quiet)));
    for b in buckets {
        args.push(shape_arg(b));
        args.push(Arg::Int(i64::from(b.capacity)));
        args.push(Arg::Int(b.period_us()));
    }
    Call {
        lua: &TAKE_LUA,
        keys,
        args,
    }
}

/// Gives back `m` of the tokens `taken` took from the buckets of `keys`, `before` of which were
/// given back already (which lowers a rate bucket's stamp, see `script.rs`).
pub(crate) fn refund_call(
    keys: Vec<String>,
    buckets: &[Bucket],
    taken: &Taken,
    m: u64,
    before: u64,
) -> Call<'static> {
    let mut args = Vec::with_capacity(1 + 4 * buckets.len());
    args.push(Arg::Int(m as i64));
    for (b, seen) in buckets.iter().zip(&taken.seen) {
        let stamp = match b.shape {
            Shape::Window => seen.stamp,
            Shape::Rate => seen.stamp - rate_span_ceil(b, before),
        };
        args.push(shape_arg(b));
        args.push(Arg::Int(i64::from(b.capacity)));
        args.push(Arg::Int(b.period_us()));
        args.push(Arg::Int(stamp));
    }
    Call {
        lua: &REFUND_LUA,
        keys,
        args,
    }
}

fn instant(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The answer to a recipient's take of one token from each of its buckets.
fn own_answer(request: &CapRequest, own: &[usize], buckets: &[Bucket], t: &Taken) -> CapAnswer {
    if t.taken >= 1 {
        return CapAnswer::Granted;
    }
    let mut worst: Option<(i64, usize)> = None;
    for (i, (bucket, seen)) in buckets.iter().zip(&t.seen).enumerate() {
        let due = bucket.due(seen, 0, 1, t.now);
        if worst.is_none_or(|(d, _)| due > d) {
            worst = Some((due, own[i]));
        }
    }
    let (due, limit) = worst.unwrap_or((t.now, 0));
    debug_assert!(limit < request.limits.len());
    CapAnswer::Denied {
        retry_at: instant(due),
        limit,
    }
}

fn parse_all(
    replies: &[redis::Value],
    keys: impl Iterator<Item = usize>,
) -> Result<Vec<Taken>, CapsError> {
    replies
        .iter()
        .zip(keys)
        .map(|(reply, n)| parse_take(reply, n))
        .collect()
}

fn own_buckets(requests: &[CapRequest], plan: &Plan, r: usize) -> Vec<Bucket> {
    plan.own[r]
        .iter()
        .map(|&l| requests[r].limits[l].bucket)
        .collect()
}

fn warn_on_failed_refunds(replies: &[redis::Value]) {
    for reply in replies {
        if let redis::Value::ServerError(e) = reply {
            tracing::warn!(error = ?e, "cap refund failed; the tokens stay spent");
        }
    }
}

impl Caps {
    /// Takes one token from every limit of each request, all or none per request, and says
    /// which requests may be sent. Answers are in the order of `requests`. Two round trips for
    /// requests with shared limits (the shared slots, then the phones'), one for the others;
    /// each slot is touched once (see the crate header).
    ///
    /// On `Err` nothing may be sent; tokens some requests took are lost, which only delays.
    pub async fn check(&self, requests: &[CapRequest]) -> Result<Vec<CapAnswer>, CapsError> {
        Ok(self
            .check_inner(requests, false)
            .await?
            .into_iter()
            .map(|(answer, _)| answer)
            .collect())
    }

    /// [`Caps::check`], with, for each granted request that has limits of its own, the
    /// [`Grant`] that can give them back. The same round trips; the recipients' takes answer
    /// their stamps.
    pub async fn check_granting(
        &self,
        requests: &[CapRequest],
    ) -> Result<Vec<(CapAnswer, Option<Grant>)>, CapsError> {
        self.check_inner(requests, true).await
    }

    /// Gives back what each grant took from its recipient's own limits: the window entries the
    /// take wrote, or a rate bucket's tokens (never more than the take took, see `script.rs`).
    /// One round trip. Best effort: a grant not given back only delays that recipient.
    pub async fn give_back(&self, grants: Vec<Grant>) -> Result<(), CapsError> {
        if grants.is_empty() {
            return Ok(());
        }
        let mut calls = self.owed.take();
        calls.extend(
            grants
                .iter()
                .map(|g| refund_call(g.keys.clone(), &g.buckets, &g.taken, 1, 0)),
        );
        let replies = self
            .timed(true, script::run_tolerant(&self.conn, &calls))
            .await?;
        warn_on_failed_refunds(&replies);
        Ok(())
    }

    /// Sends the refunds of shared tokens still owed (see the crate header), in one round
    /// trip; nothing when none is owed. A sender calls it when it runs out of work, so tokens
    /// taken and not used are not held while nothing else would send them.
    pub async fn settle(&self) -> Result<(), CapsError> {
        let calls = self.owed.take();
        if calls.is_empty() {
            return Ok(());
        }
        let replies = self
            .timed(true, script::run_tolerant(&self.conn, &calls))
            .await?;
        warn_on_failed_refunds(&replies);
        Ok(())
    }

    async fn check_inner(
        &self,
        requests: &[CapRequest],
        keep_grants: bool,
    ) -> Result<Vec<(CapAnswer, Option<Grant>)>, CapsError> {
        let quiet = !keep_grants;
        let plan = Plan::build(&self.prefix, requests)?;
        let mut grants: Vec<Option<Grant>> = (0..requests.len()).map(|_| None).collect();
        let keep = |r: usize, t: &Taken, plan: &Plan, grants: &mut Vec<Option<Grant>>| {
            if keep_grants && t.taken >= 1 && !plan.own[r].is_empty() {
                grants[r] = Some(Grant {
                    keys: plan.own_keys[r].clone(),
                    buckets: own_buckets(requests, plan, r),
                    taken: t.clone(),
                });
            }
        };
        let n = requests.len();
        let mut answers: Vec<Option<CapAnswer>> = vec![None; n];

        // Phase 1: counted takes on shared groups; requests with nothing shared go straight on.
        // Refunds owed by earlier batches go first, on their slots, ahead of these takes.
        let mut calls: Vec<Call<'static>> = self.owed.take();
        let owed = calls.len();
        calls.extend(
            plan.groups
                .iter()
                .map(|g| take_call(g.keys.clone(), &g.buckets, g.demand, false)),
        );
        let mut direct = Vec::new();
        for (r, answer) in answers.iter_mut().enumerate() {
            if !plan.shared[r].is_empty() {
                continue;
            }
            if plan.own[r].is_empty() {
                *answer = Some(CapAnswer::Granted);
            } else {
                direct.push(r);
                calls.push(plan.own_take(requests, r, 1, quiet));
            }
        }
        let replies = self
            .timed(!calls.is_empty(), script::run_tolerant(&self.conn, &calls))
            .await?;
        let (refund_replies, replies) = replies.split_at(owed);
        warn_on_failed_refunds(refund_replies);
        if let Some(redis::Value::ServerError(e)) = replies
            .iter()
            .find(|r| matches!(r, redis::Value::ServerError(_)))
        {
            return Err(redis::RedisError::from(e.clone()).into());
        }
        let (group_replies, direct_replies) = replies.split_at(plan.groups.len());
        let taken = parse_all(group_replies, plan.groups.iter().map(|g| g.keys.len()))?;
        for (&r, reply) in direct.iter().zip(direct_replies) {
            let t = parse_take(reply, plan.own[r].len())?;
            let buckets = own_buckets(requests, &plan, r);
            answers[r] = Some(own_answer(&requests[r], &plan.own[r], &buckets, &t));
            keep(r, &t, &plan, &mut grants);
        }

        // Hand the shared tokens out in batch order: one of each group a request needs, or none.
        let mut left: Vec<u64> = taken.iter().map(|t| t.taken).collect();
        let mut queued: Vec<u64> = vec![0; plan.groups.len()];
        let mut holders = Vec::new();
        for (r, (shared, answer)) in plan.shared.iter().zip(&mut answers).enumerate() {
            if shared.is_empty() {
                continue;
            }
            if shared.iter().all(|(g, _)| left[*g] > 0) {
                for (g, _) in shared {
                    left[*g] -= 1;
                }
                holders.push(r);
                continue;
            }
            let mut worst: Option<(i64, usize)> = None;
            for (g, limits) in shared {
                if left[*g] > 0 {
                    continue;
                }
                queued[*g] += 1;
                let t = &taken[*g];
                for (i, &limit) in limits.iter().enumerate() {
                    let due =
                        plan.groups[*g].buckets[i].due(&t.seen[i], t.taken, queued[*g], t.now);
                    if worst.is_none_or(|(d, _)| due > d) {
                        worst = Some((due, limit));
                    }
                }
            }
            let (due, limit) = worst.expect("a request without all its shared tokens lacks one");
            *answer = Some(CapAnswer::Denied {
                retry_at: instant(due),
                limit,
            });
        }

        // Phase 2: the recipients of the holders; unused shared tokens go back meanwhile.
        let mut calls = Vec::new();
        let mut pending = Vec::new();
        for &r in &holders {
            if plan.own[r].is_empty() {
                answers[r] = Some(CapAnswer::Granted);
            } else {
                pending.push(r);
                calls.push(plan.own_take(requests, r, 1, quiet));
            }
        }
        // Unused shared tokens are owed back: their slots were touched in phase 1.
        self.owed.owe(
            plan.groups
                .iter()
                .enumerate()
                .filter(|&(g, _)| left[g] > 0)
                .map(|(g, group)| {
                    refund_call(group.keys.clone(), &group.buckets, &taken[g], left[g], 0)
                }),
        );
        let own_replies = self
            .timed(!calls.is_empty(), script::run_tolerant(&self.conn, &calls))
            .await?;
        let mut back: Vec<u64> = vec![0; plan.groups.len()];
        for (&r, reply) in pending.iter().zip(&own_replies) {
            let t = parse_take(reply, plan.own[r].len())?;
            let buckets = own_buckets(requests, &plan, r);
            let answer = own_answer(&requests[r], &plan.own[r], &buckets, &t);
            if !answer.is_granted() {
                for (g, _) in &plan.shared[r] {
                    back[*g] += 1;
                }
            }
            keep(r, &t, &plan, &mut grants);
            answers[r] = Some(answer);
        }

        // Phase 3: a phone said no; its shared tokens are owed back. The answers stand.
        self.owed.owe(
            plan.groups
                .iter()
                .enumerate()
                .filter(|&(g, _)| back[g] > 0)
                .map(|(g, group)| {
                    refund_call(
                        group.keys.clone(),
                        &group.buckets,
                        &taken[g],
                        back[g],
                        left[g],
                    )
                }),
        );

        Ok(answers
            .into_iter()
            .map(|a| a.expect("every request is answered"))
            .zip(grants)
            .collect())
    }

    /// When each request would be granted, taking nothing: `Granted` if it would be now, else
    /// `Denied` with the time its last limit frees up (for Explain and the dry-run). One round
    /// trip.
    pub async fn peek(&self, requests: &[CapRequest]) -> Result<Vec<CapAnswer>, CapsError> {
        let plan = Plan::build(&self.prefix, requests)?;
        // What is owed goes back first, so the answer counts it (peek is off the send path).
        self.settle().await?;
        let mut calls: Vec<Call<'static>> = plan
            .groups
            .iter()
            .map(|g| take_call(g.keys.clone(), &g.buckets, 0, false))
            .collect();
        let mut own_call = vec![None; requests.len()];
        for (r, call) in own_call.iter_mut().enumerate() {
            if !plan.own[r].is_empty() {
                *call = Some(calls.len());
                calls.push(plan.own_take(requests, r, 0, true));
            }
        }
        let replies = self
            .timed(!calls.is_empty(), script::run(&self.conn, &calls))
            .await?;
        let seen = parse_all(&replies, calls.iter().map(|c| c.keys.len()))?;

        let mut answers = Vec::with_capacity(requests.len());
        for r in 0..requests.len() {
            let mut worst: Option<(i64, usize)> = None;
            let mut consider = |bucket: &Bucket, t: &Taken, i: usize, limit: usize| {
                let due = bucket.due(&t.seen[i], 0, 1, t.now);
                if due > t.now && worst.is_none_or(|(d, _)| due > d) {
                    worst = Some((due, limit));
                }
            };
            if let Some(c) = own_call[r] {
                for (i, &limit) in plan.own[r].iter().enumerate() {
                    consider(&requests[r].limits[limit].bucket, &seen[c], i, limit);
                }
            }
            for (g, limits) in &plan.shared[r] {
                for (i, &limit) in limits.iter().enumerate() {
                    consider(&plan.groups[*g].buckets[i], &seen[*g], i, limit);
                }
            }
            answers.push(match worst {
                None => CapAnswer::Granted,
                Some((due, limit)) => CapAnswer::Denied {
                    retry_at: instant(due),
                    limit,
                },
            });
        }
        Ok(answers)
    }
}
