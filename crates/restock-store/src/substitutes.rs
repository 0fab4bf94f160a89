//! Groups of close substitutes: set, listed and deleted through the API, or written from the
//! tenant's configuration at start. What a group suppresses is read where texts are decided
//! (`substitute_variants` in V13, joined by the eligibility and dispatch queries).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use crate::cached::{execute, query, query_opt};
use crate::{Store, StoreError};

/// One member: a variant, or a product standing for its variants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Member {
    Variant(String),
    Product(String),
}

impl Member {
    fn key(&self) -> String {
        match self {
            Member::Variant(v) => format!("v:{v}"),
            Member::Product(p) => format!("p:{p}"),
        }
    }
}

/// A group as stored. Members are variants first, each in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub group_id: String,
    pub members: Vec<Member>,
    pub configured: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The prefix of groups written from configuration; API group ids cannot hold a '.'.
pub const CONFIG_PREFIX: &str = "config.";

async fn write_members(
    tx: &impl GenericClient,
    tenant_id: &str,
    group_id: &str,
    members: &[Member],
) -> Result<(), StoreError> {
    execute(
        tx,
        "DELETE FROM substitute_members WHERE tenant_id = $1 AND group_id = $2",
        &[&tenant_id, &group_id],
    )
    .await?;
    let keys: Vec<String> = members.iter().map(Member::key).collect();
    let variants: Vec<Option<&str>> = members
        .iter()
        .map(|m| match m {
            Member::Variant(v) => Some(v.as_str()),
            Member::Product(_) => None,
        })
        .collect();
    let products: Vec<Option<&str>> = members
        .iter()
        .map(|m| match m {
            Member::Product(p) => Some(p.as_str()),
            Member::Variant(_) => None,
        })
        .collect();
    execute(
        tx,
        "INSERT INTO substitute_members (tenant_id, group_id, member_key, variant_id, product_id) \
         SELECT $1, $2, u.k, u.v, u.p FROM UNNEST($3::text[], $4::text[], $5::text[]) AS u(k, v, p) \
         ON CONFLICT DO NOTHING",
        &[&tenant_id, &group_id, &keys, &variants, &products],
    )
    .await?;
    Ok(())
}

async fn read_group(
    client: &impl GenericClient,
    tenant_id: &str,
    group_id: &str,
) -> Result<Option<GroupRow>, StoreError> {
    let Some(g) = query_opt(
        client,
        "SELECT source, created_at, updated_at FROM substitute_groups \
         WHERE tenant_id = $1 AND group_id = $2",
        &[&tenant_id, &group_id],
    )
    .await?
    else {
        return Ok(None);
    };
    let rows = query(
        client,
        "SELECT variant_id, product_id FROM substitute_members WHERE tenant_id = $1 AND group_id = $2",
        &[&tenant_id, &group_id],
    )
    .await?;
    let mut members: Vec<Member> = rows
        .iter()
        .map(|r| match r.get::<_, Option<String>>(0) {
            Some(v) => Member::Variant(v),
            None => Member::Product(r.get(1)),
        })
        .collect();
    members.sort();
    Ok(Some(GroupRow {
        group_id: group_id.to_string(),
        members,
        configured: g.get::<_, String>(0) == "config",
        created_at: g.get(1),
        updated_at: g.get(2),
    }))
}

impl Store {
    /// Creates or replaces an API group. Answers the group and whether it was created. A
    /// configured group is refused.
    pub async fn set_substitute_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        members: &[Member],
        now: DateTime<Utc>,
    ) -> Result<(GroupRow, bool), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let existing = query_opt(
            &tx,
            "SELECT source FROM substitute_groups WHERE tenant_id = $1 AND group_id = $2 FOR UPDATE",
            &[&tenant_id, &group_id],
        )
        .await?;
        let created = match existing {
            Some(r) if r.get::<_, String>(0) == "config" => {
                return Err(configured(group_id));
            }
            Some(_) => {
                let before = read_group(&tx, tenant_id, group_id).await?;
                let mut wanted = members.to_vec();
                wanted.sort();
                if before.as_ref().is_some_and(|b| b.members == wanted) {
                    // The same members again: nothing changes, not even the update time.
                    tx.commit().await?;
                    return Ok((before.expect("checked"), false));
                }
                execute(
                    &tx,
                    "UPDATE substitute_groups SET updated_at = $3 WHERE tenant_id = $1 AND group_id = $2",
                    &[&tenant_id, &group_id, &now],
                )
                .await?;
                false
            }
            None => {
                // Two first calls racing: the second waits on the key and replaces.
                let inserted = execute(
                    &tx,
                    "INSERT INTO substitute_groups (tenant_id, group_id, source, created_at, updated_at) \
                     VALUES ($1, $2, 'api', $3, $3) ON CONFLICT DO NOTHING",
                    &[&tenant_id, &group_id, &now],
                )
                .await?;
                inserted == 1
            }
        };
        write_members(&tx, tenant_id, group_id, members).await?;
        let row = read_group(&tx, tenant_id, group_id)
            .await?
            .ok_or(StoreError::NotFound("substitute group"))?;
        tx.commit().await?;
        Ok((row, created))
    }

    /// Deletes an API group; a configured one is refused.
    pub async fn delete_substitute_group(
        &self,
        tenant_id: &str,
        group_id: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let source = query_opt(
            &tx,
            "DELETE FROM substitute_groups WHERE tenant_id = $1 AND group_id = $2 RETURNING source",
            &[&tenant_id, &group_id],
        )
        .await?
        .ok_or(StoreError::NotFound("substitute group"))?;
        if source.get::<_, String>(0) == "config" {
            return Err(configured(group_id));
        }
        execute(
            &tx,
            "DELETE FROM substitute_members WHERE tenant_id = $1 AND group_id = $2",
            &[&tenant_id, &group_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Groups by id after `after`, at most `limit`.
    pub async fn list_substitute_groups(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GroupRow>, StoreError> {
        let client = self.client().await?;
        let ids = query(
            &client,
            "SELECT group_id FROM substitute_groups WHERE tenant_id = $1 \
             AND ($2::text IS NULL OR group_id > $2) ORDER BY group_id LIMIT $3",
            &[&tenant_id, &after, &limit],
        )
        .await?;
        let mut groups = Vec::with_capacity(ids.len());
        for r in &ids {
            let id: String = r.get(0);
            if let Some(g) = read_group(&client, tenant_id, &id).await? {
                groups.push(g);
            }
        }
        Ok(groups)
    }

    /// Makes the tenant's configured groups (`name` → members) the stored `config.<name>`
    /// groups: new and changed ones written, ones no longer configured removed. One
    /// transaction, so replicas starting together agree.
    pub async fn sync_configured_substitutes(
        &self,
        tenant_id: &str,
        groups: &[(String, Vec<Member>)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialises replicas syncing the same tenant.
        execute(
            &tx,
            "SELECT pg_advisory_xact_lock(hashtextextended('substitutes:' || $1::text, 0))",
            &[&tenant_id],
        )
        .await?;
        let ids: Vec<String> = groups
            .iter()
            .map(|(name, _)| format!("{CONFIG_PREFIX}{name}"))
            .collect();
        execute(
            &tx,
            "DELETE FROM substitute_members m USING substitute_groups g \
             WHERE g.tenant_id = $1 AND g.source = 'config' AND NOT (g.group_id = ANY($2)) \
               AND m.tenant_id = g.tenant_id AND m.group_id = g.group_id",
            &[&tenant_id, &ids],
        )
        .await?;
        execute(
            &tx,
            "DELETE FROM substitute_groups WHERE tenant_id = $1 AND source = 'config' \
             AND NOT (group_id = ANY($2))",
            &[&tenant_id, &ids],
        )
        .await?;
        for (id, (_, members)) in ids.iter().zip(groups) {
            let mut wanted = members.clone();
            wanted.sort();
            wanted.dedup();
            let before = read_group(&tx, tenant_id, id).await?;
            if before.as_ref().is_some_and(|b| b.members == wanted) {
                continue;
            }
            execute(
                &tx,
                "INSERT INTO substitute_groups (tenant_id, group_id, source, created_at, updated_at) \
                 VALUES ($1, $2, 'config', $3, $3) \
                 ON CONFLICT (tenant_id, group_id) DO UPDATE SET source = 'config', updated_at = $3",
                &[&tenant_id, id, &now],
            )
            .await?;
            write_members(&tx, tenant_id, id, &wanted).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn configured(group_id: &str) -> StoreError {
    StoreError::Refused {
        kind: "CONFIGURED",
        subject: "group_id",
        description: format!(
            "substitute group {group_id} comes from the tenant's configuration; change it there"
        ),
    }
}
