//! Demo data for `gcbb dev`: categories, ~40 companions (some private, some platform-owned),
//! their messages and one demo group chat. Deterministic ids, so a re-run is recognisable. Also
//! the one list of categories the bench's data set uses too.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// The categories of both sample data sets, the demo's and the bench's (`bench seed` files its
/// companions under all of them at random). A category's id is its position here: `cat_demo_NN`
/// in the demo, `cat_NN` in the bench, so keep the order (tests name `cat_demo_01`, the bench
/// `cat_11`) and add new ones at the end.
pub const CATEGORIES: &[&str] = &[
    "Famous People",
    "Philosophy",
    "Musicians",
    "Games",
    "Animals",
    "Movies & TV",
    "Scientists",
    "Fantasy",
    "Anime",
    "Helpers",
    "History",
    "Sports",
];

/// The demo's companions (40), each under the category a first-time visitor would look for it
/// in. Ids follow this order (`cmp_demo_NN`), and so do owner and privacy (see `DemoSet::build`):
/// tests rely on both, so append rather than reorder.
const COMPANIONS: &[(&str, &str)] = &[
    ("Ada Lovelace", "Scientists"),
    ("Marcus Aurelius", "Philosophy"),
    ("Captain Nova", "Movies & TV"),
    ("Luna the Cat", "Animals"),
    ("Sherlock", "Movies & TV"),
    ("Mozart", "Musicians"),
    ("Pixel Knight", "Games"),
    ("Professor Oak", "Games"),
    ("Cleopatra", "Famous People"),
    ("Socrates", "Philosophy"),
    ("Marie Curie", "Scientists"),
    ("Gandalf the Grey", "Fantasy"),
    ("Frida", "Famous People"),
    ("Detective Noir", "Movies & TV"),
    ("Beethoven", "Musicians"),
    ("Space Pilot Zed", "Games"),
    ("Wise Owl", "Animals"),
    ("Confucius", "Philosophy"),
    ("Nikola Tesla", "Scientists"),
    ("Elven Archer", "Fantasy"),
    ("Napoleon", "Famous People"),
    ("Film Critic Flo", "Movies & TV"),
    ("Jazz Cat", "Musicians"),
    ("Dungeon Master", "Games"),
    ("Golden Retriever", "Animals"),
    ("Simone de Beauvoir", "Philosophy"),
    ("Darwin", "Scientists"),
    ("Dragon Tamer", "Fantasy"),
    ("Joan of Arc", "Famous People"),
    ("Sitcom Sam", "Movies & TV"),
    ("Opera Diva", "Musicians"),
    ("Speedrunner", "Games"),
    ("Parrot Polly", "Animals"),
    ("Nietzsche", "Philosophy"),
    ("Galileo", "Scientists"),
    ("Fairy Queen", "Fantasy"),
    ("Shakespeare", "Famous People"),
    ("Noir Narrator", "Movies & TV"),
    ("Rock Legend", "Musicians"),
    ("Chess Master", "Games"),
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
    /// Each member's first message, in `members`' order.
    greetings: Vec<String>,
    system_user_id: String,
}

/// The demo's id of the category at `index` in `CATEGORIES`.
fn category_id(index: usize) -> String {
    format!("cat_demo_{index:02}")
}

/// Where `name` is in `CATEGORIES`; a demo companion filed under another name is a bug in
/// `COMPANIONS` (a unit test files every one).
fn category_index(name: &str) -> usize {
    CATEGORIES
        .iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("{name:?} is not in CATEGORIES"))
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
        // Only the categories something is filed under: a chip that lists nobody reads as broken.
        let (category_ids, category_names) = CATEGORIES
            .iter()
            .enumerate()
            .filter(|(_, name)| COMPANIONS.iter().any(|(_, c)| c == *name))
            .map(|(i, name)| (category_id(i), (*name).to_owned()))
            .unzip();
        let mut companions = Columns::default();
        let mut messages = Columns::default();
        let mut members = Vec::new();
        let mut greetings = Vec::new();
        for (i, (name, category)) in COMPANIONS.iter().enumerate() {
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
                category_id(category_index(category)),
                (i % 3 != 2).to_string(),
            ]);
            if platform && members.len() < 3 {
                members.push(id.clone());
                greetings.push(format!("Hello, I am {name}. Welcome to the round table!"));
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
            category_names,
            category_ids,
            companions,
            messages,
            group_id: "grp_demo_round_table".into(),
            members,
            greetings,
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
             SELECT $1 || '_m' || ord, body, $1, true, cid, \
                    now() - make_interval(secs => (100 - ord)::int), \
                    now() - make_interval(secs => (100 - ord)::int) \
             FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(cid, body, ord)",
            &[
                (&set.group_id, Type::TEXT),
                (&set.members, text_array.clone()),
                (&set.greetings, text_array),
            ],
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

    /// The category name a demo companion is filed under, as inserted.
    fn category_of<'a>(set: &'a DemoSet, companion: &str) -> &'a str {
        let c = &set.companions.cols;
        let row = c[4].iter().position(|n| n == companion).unwrap();
        let at = set.category_ids.iter().position(|id| *id == c[7][row]);
        at.map_or_else(
            || panic!("{companion}: {} is not inserted", c[7][row]),
            |i| set.category_names[i].as_str(),
        )
    }

    #[test]
    fn every_demo_companion_is_filed_under_an_inserted_category_of_the_shared_list() {
        let set = DemoSet::build("system");
        for (name, category) in COMPANIONS {
            assert_eq!(category_of(&set, name), *category);
        }
        for (id, name) in set.category_ids.iter().zip(&set.category_names) {
            assert_eq!(*id, category_id(category_index(name)), "{name}");
        }
        // The categories that fit nobody of the demo (the bench's extra ones) aren't inserted.
        assert_eq!(set.category_names.len(), 8, "{:?}", set.category_names);
        assert!(!set.category_names.iter().any(|n| n == "Sports"));
    }

    #[test]
    fn demo_companions_sit_where_a_first_time_user_would_look_for_them() {
        let set = DemoSet::build("system");
        for (companion, category) in [
            ("Sherlock", "Movies & TV"),
            ("Golden Retriever", "Animals"),
            ("Parrot Polly", "Animals"),
            ("Luna the Cat", "Animals"),
            ("Ada Lovelace", "Scientists"),
            ("Cleopatra", "Famous People"),
            ("Socrates", "Philosophy"),
            ("Mozart", "Musicians"),
            ("Gandalf the Grey", "Fantasy"),
            ("Pixel Knight", "Games"),
        ] {
            assert_eq!(category_of(&set, companion), category, "{companion}");
        }
    }

    #[test]
    fn every_demo_category_lists_a_public_companion_to_anonymous_visitors() {
        let set = DemoSet::build("system");
        let c = &set.companions.cols;
        for id in &set.category_ids {
            let public = (0..c[0].len()).filter(|&r| c[7][r] == *id && c[6][r] == "false");
            assert!(public.count() > 0, "{id} lists no public companion");
        }
    }

    #[test]
    fn the_categories_integration_tests_name_keep_their_companions() {
        // tests/integration list cat_demo_01 expecting cmp_demo_01 there, and move cmp_demo_01
        // to cat_demo_05 expecting a real move.
        let set = DemoSet::build("system");
        let c = &set.companions.cols;
        assert_eq!(
            (c[0][1].as_str(), c[7][1].as_str()),
            ("cmp_demo_01", "cat_demo_01")
        );
        assert!(set.category_ids.iter().any(|id| id == "cat_demo_05"));
    }

    #[test]
    fn the_round_table_greetings_name_companions_by_their_display_names() {
        let set = DemoSet::build("system");
        let c = &set.companions.cols;
        assert_eq!(set.greetings.len(), set.members.len());
        for (member, greeting) in set.members.iter().zip(&set.greetings) {
            let row = c[0].iter().position(|id| id == member).unwrap();
            assert!(
                greeting.contains(&c[4][row]),
                "{greeting} names {}",
                c[4][row]
            );
            assert!(!greeting.contains("cmp_"), "{greeting} shows an id");
        }
        assert_eq!(
            set.greetings[0],
            "Hello, I am Ada Lovelace. Welcome to the round table!"
        );
    }
}
