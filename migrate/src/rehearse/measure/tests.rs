use super::*;

#[test]
fn lock_modes_order_as_postgres_ranks_them_and_name_what_they_block() {
    let modes = [
        "AccessShareLock",
        "RowShareLock",
        "RowExclusiveLock",
        "ShareUpdateExclusiveLock",
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    ]
    .map(|m| LockMode::from_pg(m).expect(m));
    assert!(modes.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(LockMode::from_pg("SIReadLock"), None);
    assert_eq!(LockMode::AccessExclusive.name(), "ACCESS EXCLUSIVE");
    assert_eq!(LockMode::AccessExclusive.blocks(), "reads and writes");
    assert_eq!(LockMode::Share.blocks(), "writes");
    assert!(LockMode::Share.blocks_writes());
    assert!(!LockMode::ShareUpdateExclusive.blocks_writes());
    assert_eq!(
        serde_json::to_value(LockMode::ShareRowExclusive).expect("json"),
        "SHARE ROW EXCLUSIVE"
    );
}

#[test]
fn rows_are_shown_for_statements_that_touch_rows_only() {
    let done = [SimpleQueryMessage::CommandComplete(42)];
    assert_eq!(rows_of(&done, true), Some(42));
    assert_eq!(rows_of(&done, false), None);
    assert_eq!(rows_of(&[], true), None);
}
