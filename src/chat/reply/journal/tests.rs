use super::*;

#[test]
fn records_are_one_json_object_each_and_read_back() {
    let records = [
        Record::Start { at: 1, deadline: 2 },
        Record::Message {
            id: MessageId::issued("m1"),
            companion_id: None,
            name: None,
            row: None,
        },
        Record::Text {
            t: "hé\n\"".into()
        },
        Record::End {
            status: ReplyStatus::Stopped,
            error: None,
            tokens: 7,
            stored: true,
            pending: false,
            at: 3,
        },
        Record::Error {
            message: "x".into(),
        },
        Record::Done,
    ];
    for r in records {
        let raw = r.encode();
        assert_eq!(raw.first(), Some(&b'{'));
        assert_eq!(Record::decode(&raw), Some(r));
    }
    assert_eq!(
        Record::Text { t: "a".into() }.encode(),
        Bytes::from_static(br#"{"k":"text","t":"a"}"#)
    );
    assert_eq!(Record::decode(b"not json"), None);
}
