//! The last step before a text is handed to the provider: the fence that makes an opt-out (or
//! an erasure) and a hand-over to the same phone mutually exclusive, and the mark that tells a
//! reconciler whether a hand-over may have begun.
//!
//! A sender first takes a share lock on the contacts of the texts it is about to hand over
//! ([`Store::fence_contacts`]) and keeps it until the provider has answered. Opting out and
//! erasing lock the contact row exclusively, so they wait for hand-overs in progress, and a
//! hand-over that locks after them sees their ledger event. Then [`Store::mark_handed`] checks,
//! in a statement that starts after the lock is held, that the lease is still the sender's and
//! that the phone is neither opted out nor erased, and commits `handed_at` before any request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::cached::{query, query_indexed};
use crate::{Store, StoreError};

/// Share locks on contacts, held by a task of their own until [`Fence::release`] (or drop).
#[derive(Debug)]
pub struct Fence {
    release: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Fence {
    /// Ends the fence's transaction (its locks go with it) and waits until they are gone.
    pub async fn release(mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        // Dropped without `release`: the task commits on its own once the sender is gone.
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
    }
}

/// What the last check says of one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Marked handed: send it now (if the sender's own clock agrees the lease still holds).
    Go,
    /// The phone opted out since the text was claimed: never sent.
    OptedOut,
    /// The phone was erased since the text was claimed: never sent.
    Erased,
    /// The lease is no longer this sender's (or is about to run out): not this sender's to
    /// decide or record.
    LeaseLost,
}

impl Store {
    /// Takes share locks on `contacts` (tenant, contact id) in a transaction held open until
    /// the answer is released or dropped. An opt-out or erasure of one of them waits for it.
    ///
    /// `hold` bounds the transaction: a sender frozen with the fence in hand (a stalled
    /// process) cannot make an opt-out wait longer than this; Postgres ends the session.
    pub async fn fence_contacts(
        &self,
        contacts: &[(String, Uuid)],
        hold: Duration,
    ) -> Result<Fence, StoreError> {
        let mut client = self.client().await?;
        let tenants: Vec<String> = contacts.iter().map(|c| c.0.clone()).collect();
        let ids: Vec<Uuid> = contacts.iter().map(|c| c.1).collect();
        let (locked_tx, locked_rx) = oneshot::channel::<Result<(), StoreError>>();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let locked = async {
                let tx = client.transaction().await?;
                let timeout = format!(
                    "SET LOCAL idle_in_transaction_session_timeout = {}",
                    hold.as_millis().max(1)
                );
                // Sorted, so two fences and an exclusive locker never wait on each other in a
                // circle. Pipelined with the timeout: one round trip.
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tenants, &ids];
                tokio::try_join!(
                    async { tx.batch_execute(&timeout).await.map_err(StoreError::from) },
                    query(
                        &tx,
                        "SELECT 1 FROM contacts c \
                         JOIN UNNEST($1::text[], $2::uuid[]) AS u(tenant_id, contact_id) \
                           ON c.tenant_id = u.tenant_id AND c.contact_id = u.contact_id \
                         ORDER BY c.tenant_id, c.contact_id FOR SHARE OF c",
                        &params,
                    ),
                )?;
                Ok::<_, StoreError>(tx)
            }
            .await;
            match locked {
                Ok(tx) => {
                    let _ = locked_tx.send(Ok(()));
                    let _ = release_rx.await;
                    if let Err(e) = tx.commit().await {
                        tracing::debug!(error = %e, "a hand-over fence ended by itself");
                    }
                }
                Err(e) => {
                    let _ = locked_tx.send(Err(e));
                }
            }
        });
        match locked_rx.await {
            Ok(Ok(())) => Ok(Fence {
                release: Some(release_tx),
                task: Some(task),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Unavailable(
                "the hand-over fence task ended".into(),
            )),
        }
    }

    /// The last check before a hand-over, for texts `owner` holds under its lease: answers,
    /// per message, whether it may go, and marks those that may as handed (committed before
    /// the caller sends anything). Call it while a [`Fence`] holds the texts' contacts.
    ///
    /// A lease that runs out within `margin` of `now` counts as lost: the hand-over would end
    /// too close to the moment another replica may reconcile the text.
    pub async fn mark_handed(
        &self,
        owner: &str,
        messages: &[(String, Uuid)],
        now: DateTime<Utc>,
        margin: Duration,
    ) -> Result<Vec<(Uuid, Handover)>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let tenants: Vec<&str> = messages.iter().map(|m| m.0.as_str()).collect();
        let ids: Vec<Uuid> = messages.iter().map(|m| m.1).collect();
        let safe_until = now + chrono::Duration::from_std(margin).unwrap_or_default();
        // One statement, one round trip: the check, then the mark of those that may go, each
        // message found by its key (joined to the batch's keys, never through an index that
        // holds every version of every text of the release). It starts after the fence's
        // locks are held, and keeps opt-outs and erasures of these contacts out of it. A
        // lease taken over after the check fails the update's own condition (re-read on the
        // newest version); `COALESCE` keeps `messages_leases` out of the update's plan. The
        // answer is the refused plus the marked, never a join of the two: planned generically,
        // that join was a nested loop over the batch squared (250,000 comparisons, ~40% of
        // the statement, for 500 texts). A text allowed by the check but not marked is in
        // neither, and counts as lost below.
        let flags = query_indexed(
            &client,
            "WITH f AS MATERIALIZED ( \
               SELECT m.tenant_id, m.message_id, \
                 COALESCE(m.status = 'sending' AND m.lease_owner = $3 AND m.lease_until > $4, false) AS held, \
                 (ct.phone_e164 IS NULL OR ct.erased_at IS NOT NULL) AS erased, \
                 COALESCE((SELECT e.kind FROM consent_events e \
                    WHERE e.tenant_id = m.tenant_id AND e.contact_id = m.contact_id \
                      AND e.kind IN ('opt_in', 'opt_out') ORDER BY e.seq DESC LIMIT 1) = 'opt_out', \
                   false) AS opted_out \
               FROM UNNEST($1::text[], $2::uuid[]) AS u(tenant_id, message_id) \
               JOIN messages m ON m.tenant_id = u.tenant_id AND m.message_id = u.message_id \
               JOIN contacts ct ON ct.tenant_id = m.tenant_id AND ct.contact_id = m.contact_id), \
             handed AS ( \
               UPDATE messages m SET handed_at = $5 FROM f \
               WHERE m.tenant_id = f.tenant_id AND m.message_id = f.message_id \
                 AND f.held AND NOT f.erased AND NOT f.opted_out \
                 AND m.status = 'sending' AND m.lease_owner = $3 \
                 AND COALESCE(m.lease_until, '-infinity') > $4 \
               RETURNING m.message_id) \
             SELECT f.message_id, f.held, f.erased, f.opted_out, false FROM f \
             WHERE NOT (f.held AND NOT f.erased AND NOT f.opted_out) \
             UNION ALL SELECT h.message_id, true, false, false, true FROM handed h",
            &[&tenants, &ids, &owner, &safe_until, &now],
        )
        .await?;
        let rows: Vec<(Uuid, bool, bool, bool, bool)> = flags
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        let mut answers: Vec<(Uuid, Handover)> = rows
            .into_iter()
            .map(|(id, held, erased, opted_out, go)| {
                let verdict = if go {
                    Handover::Go
                } else if !held {
                    Handover::LeaseLost
                } else if erased {
                    Handover::Erased
                } else if opted_out {
                    Handover::OptedOut
                } else {
                    // Held when read, lost by the time of the update.
                    Handover::LeaseLost
                };
                (id, verdict)
            })
            .collect();
        // A message that vanished from under the sender, or whose lease went between the check
        // and the mark, is not its to record.
        let answered: std::collections::HashSet<Uuid> = answers.iter().map(|(m, _)| *m).collect();
        for (_, id) in messages {
            if !answered.contains(id) {
                answers.push((*id, Handover::LeaseLost));
            }
        }
        Ok(answers)
    }
}
