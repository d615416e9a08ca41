//! Demo data for `gcbb dev`: categories, ~40 companions (some private, some platform-owned),
//! their messages and one demo group chat. Deterministic ids, so a re-run is recognisable.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// Categories of the demo set.
const CATEGORIES: &[&str] = &[
    "Famous People",
    "Movies & TV",
    "Musicians",
    "Games",
    "Animals",
    "Philosophy",
    "Scientists",
    "Fantasy",
];

/// Companion names of the demo set (40).
const NAMES: &[&str] = &[
    "Ada Lovelace",
    "Marcus Aurelius",
    "Captain Nova",
    "Luna the Cat",
    "Sherlock",
    "Mozart",
    "Pixel Knight",
    "Professor Oak",
    "Cleopatra",
    "Socrates",
    "Marie Curie",
    "Gandalf the Grey",
    "Frida",
    "Detective Noir",
    "Beethoven",
    "Space Pilot Zed",
    "Wise Owl",
    "Confucius",
    "Nikola Tesla",
    "Elven Archer",
    "Napoleon",
    "Film Critic Flo",
    "Jazz Cat",
    "Dungeon Master",
    "Golden Retriever",
    "Simone de Beauvoir",
    "Darwin",
    "Dragon Tamer",
    "Joan of Arc",
    "Sitcom Sam",
    "Opera Diva",
    "Speedrunner",
    "Parrot Polly",
    "Nietzsche",
    "Galileo",
    "Fairy Queen",
    "Shakespeare",
    "Noir Narrator",
    "Rock Legend",
    "Chess Master",
];

/// Users that own the non-platform demo companions and write their messages.
const DEMO_USERS: &[&str] = &["user_demo_1", "user_demo_2", "user_demo_3"];

/// Inserts the demo set when the database has no companions; returns whether it did.
pub async fn insert_demo_data_if_empty(
    client: &Client,
    system_user_id: &str,
) -> Result<bool, gcbb::db::DbError> {
    let existing = client
        .query_typed("SELECT EXISTS (SELECT 1 FROM \"Companion\")", &[])
        .await?;
    if existing.first().is_some_and(|r| r.get::<_, bool>(0)) {
        return Ok(false);
    }
    let set = DemoSet::build(system_user_id);
    client.batch_execute("BEGIN").await?;
    if let Err(e) = insert_demo_set(client, &set).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    client.batch_execute("COMMIT").await?;
    // The read model was built (empty) by its migration: refresh it so the first dashboard
    // request shows the demo companions, as cron would ten minutes later.
    let system_user_id = gcbb::id::UserId::issued(system_user_id);
    gcbb::db::read_model::refresh_read_model(client, &system_user_id).await?;
    Ok(true)
}

struct DemoSet {
    category_ids: Vec<String>,
    category_names: Vec<String>,
    companions: Columns,
    messages: Columns,
    group_id: String,
    members: Vec<String>,
    system_user_id: String,
}

/// Column-wise rows, bound as arrays and expanded with `unnest` (one statement per table).
#[derive(Default)]
struct Columns {
    cols: Vec<Vec<String>>,
}

impl Columns {
    fn push(&mut self, row: Vec<String>) {
        if self.cols.is_empty() {
            self.cols = vec![Vec::new(); row.len()];
        }
        for (col, v) in self.cols.iter_mut().zip(row) {
            col.push(v);
        }
    }
}

impl DemoSet {
    fn build(system_user_id: &str) -> DemoSet {
        let category_ids: Vec<String> = (0..CATEGORIES.len())
            .map(|i| format!("cat_demo_{i:02}"))
            .collect();
        let mut companions = Columns::default();
        let mut messages = Columns::default();
        let mut members = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let id = format!("cmp_demo_{i:02}");
            let platform = i % 4 == 0;
            let owner = if platform {
                system_user_id.to_owned()
            } else {
                DEMO_USERS[i % DEMO_USERS.len()].to_owned()
            };
            let private = !platform && i % 5 == 3;
            let slug: String = name
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            companions.push(vec![
                id.clone(),
                owner.clone(),
                if platform {
                    "GCBB".into()
                } else {
                    owner.clone()
                },
                format!("https://avatars.example.invalid/{slug}.png"),
                (*name).to_owned(),
                format!(
                    "You are {name}. Stay in character, answer warmly and briefly, and never \
                     claim to be an AI model unless asked directly."
                ),
                private.to_string(),
                category_ids[i % category_ids.len()].clone(),
                (i % 3 != 2).to_string(),
            ]);
            if platform && members.len() < 3 {
                members.push(id.clone());
            }
            for m in 0..(i % 4) {
                let user = DEMO_USERS[(i + m) % DEMO_USERS.len()];
                messages.push(vec![
                    format!("msg_demo_{i:02}_{m}_q"),
                    "user".into(),
                    format!("Hello {name}, tell me something interesting ({m})."),
                    id.clone(),
                    user.into(),
                ]);
                messages.push(vec![
                    format!("msg_demo_{i:02}_{m}_a"),
                    "assistant".into(),
                    format!("Here is something interesting from {name}, part {m}."),
                    id.clone(),
                    user.into(),
                ]);
            }
        }
        DemoSet {
            category_names: CATEGORIES.iter().map(|c| c.to_string()).collect(),
            category_ids,
            companions,
            messages,
            group_id: "grp_demo_round_table".into(),
            members,
            system_user_id: system_user_id.to_owned(),
        }
    }
}

async fn insert_demo_set(client: &Client, set: &DemoSet) -> Result<(), tokio_postgres::Error> {
    let text_array = Type::TEXT_ARRAY;
    client
        .query_typed(
            "INSERT INTO \"Category\" (\"id\", \"name\") SELECT * FROM unnest($1::text[], $2::text[])",
            &[(&set.category_ids, text_array.clone()), (&set.category_names, text_array.clone())],
        )
        .await?;
    let c = &set.companions.cols;
    client
        .query_typed(
            "INSERT INTO \"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \
             \"instructions\", \"private\", \"categoryId\", \"isFree\", \"createdAt\", \"updatedAt\") \
             SELECT id, u, un, s, n, ins, p::boolean, cat, f::boolean, \
                    now() - make_interval(mins => ord::int), now() - make_interval(mins => ord::int) \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::text[], $9::text[]) WITH ORDINALITY \
                  AS t(id, u, un, s, n, ins, p, cat, f, ord)",
            &[
                (&c[0], text_array.clone()),
                (&c[1], text_array.clone()),
                (&c[2], text_array.clone()),
                (&c[3], text_array.clone()),
                (&c[4], text_array.clone()),
                (&c[5], text_array.clone()),
                (&c[6], text_array.clone()),
                (&c[7], text_array.clone()),
                (&c[8], text_array.clone()),
            ],
        )
        .await?;
    let m = &set.messages.cols;
    client
        .query_typed(
            "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"companionId\", \"userId\", \
             \"createdAt\", \"updatedAt\") \
             SELECT id, r::\"Role\", body, cid, uid, \
                    now() - make_interval(secs => (10000 - ord)::int), \
                    now() - make_interval(secs => (10000 - ord)::int) \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                  WITH ORDINALITY AS t(id, r, body, cid, uid, ord)",
            &[
                (&m[0], text_array.clone()),
                (&m[1], text_array.clone()),
                (&m[2], text_array.clone()),
                (&m[3], text_array.clone()),
                (&m[4], text_array.clone()),
            ],
        )
        .await?;
    client
        .query_typed(
            "INSERT INTO \"GroupChat\" (\"id\", \"name\", \"creatorId\", \"createdAt\", \"updatedAt\") \
             VALUES ($1, 'Demo: the round table', $2, now(), now())",
            &[(&set.group_id, Type::TEXT), (&set.system_user_id, Type::TEXT)],
        )
        .await?;
    client
        .query_typed(
            "INSERT INTO \"GroupChatMember\" (\"id\", \"groupChatId\", \"companionId\") \
             SELECT $1 || '_' || cid, $1, cid FROM unnest($2::text[]) AS t(cid)",
            &[
                (&set.group_id, Type::TEXT),
                (&set.members, text_array.clone()),
            ],
        )
        .await?;
    client
        .query_typed(
            "INSERT INTO \"GroupMessage\" (\"id\", \"content\", \"groupChatId\", \"isBot\", \
             \"senderId\", \"createdAt\", \"updatedAt\") \
             SELECT $1 || '_m' || ord, 'Welcome to the round table, ' || cid || '!', $1, true, cid, \
                    now() - make_interval(secs => (100 - ord)::int), \
                    now() - make_interval(secs => (100 - ord)::int) \
             FROM unnest($2::text[]) WITH ORDINALITY AS t(cid, ord)",
            &[(&set.group_id, Type::TEXT), (&set.members, text_array)],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_set_has_private_and_platform_companions() {
        let set = DemoSet::build("system");
        let owners = &set.companions.cols[1];
        let private = &set.companions.cols[6];
        assert_eq!(owners.len(), 40);
        assert!(owners.iter().filter(|o| *o == "system").count() >= 8);
        let private_count = private.iter().filter(|p| *p == "true").count();
        assert!(private_count >= 3);
        for (owner, p) in owners.iter().zip(private) {
            assert!(
                !(owner == "system" && p == "true"),
                "platform companions are public"
            );
        }
        assert_eq!(set.members.len(), 3);
    }
}
