//! Unit tests of the route grammar and compiled routes.

use serde_json::json;

use super::*;

fn envelope(data: Value, metadata: Value) -> Envelope {
    let value = json!({
        "event_id": "0b6f6a1c-3d7e-4a53-9a63-2f1c1d5e8a01",
        "event_type": "t.v1",
        "event_timestamp": "2026-03-01T10:00:00Z",
        "source_service": "s",
        "correlation_id": "c",
        "data": data,
        "metadata": metadata,
    });
    Envelope::parse(value.to_string().as_bytes()).unwrap()
}

fn route(event_type: Option<&str>, owner: OwnerSource) -> RouteConfig {
    RouteConfig {
        topic: "topic".into(),
        event_type: event_type.map(String::from),
        event: "e".into(),
        fields: vec![],
        owner,
    }
}

#[test]
fn templates_parse_fields_literals_and_escapes() {
    assert_eq!(
        parse_template("batch_owner:{batch_id}").unwrap(),
        [
            Part::Literal("batch_owner:".into()),
            Part::Field("batch_id".into())
        ]
    );
    assert_eq!(
        parse_template("{{x}}{a}{b}").unwrap(),
        [
            Part::Literal("{x}".into()),
            Part::Field("a".into()),
            Part::Field("b".into())
        ]
    );
    for bad in ["{", "a}", "{}", "{a b}"] {
        assert!(parse_template(bad).is_err(), "{bad}");
    }
}

#[test]
fn template_errors_say_what_and_where() {
    let cases = [
        ("ab{", TemplateError::Unclosed { at: 3 }),
        ("a{}", TemplateError::EmptyField { at: 2 }),
        (
            "{a b}",
            TemplateError::InvalidFieldChar { found: ' ', at: 3 },
        ),
        ("x}}y}", TemplateError::UnmatchedClose { at: 5 }),
    ];
    for (template, expected) in cases {
        assert_eq!(parse_template(template), Err(expected), "{template}");
    }
    assert_eq!(
        TemplateError::UnmatchedClose { at: 2 }.to_string(),
        "unmatched } at position 2 (write }} for a literal brace)"
    );
    let error = Routes::new(&[route(None, OwnerSource::HttpUrl("http://h/{".into()))]);
    assert_eq!(
        error.map(drop).map_err(|e| e.to_string()),
        Err("kafka.routes[0].owner_http_url: unclosed { at position 10".into())
    );
}

#[test]
fn owners_come_from_pointers_and_templates() {
    let event = envelope(
        json!({"batch_id": "b 1/2", "n": 7}),
        json!({"user_id": "u-1"}),
    );
    let routes = Routes::new(&[
        route(
            Some("t.v1"),
            OwnerSource::Pointer("/metadata/user_id".into()),
        ),
        route(None, OwnerSource::RedisKey("owner:{batch_id}:{n}".into())),
    ])
    .unwrap();
    let by_type = routes.find("topic", "t.v1").unwrap();
    assert_eq!(by_type.owner(&event), Owner::Known(UserId::new("u-1")));
    let catch_all = routes.find("topic", "other.v1").unwrap();
    assert_eq!(
        catch_all.owner(&event),
        Owner::Lookup(LookupKey::Redis("owner:b 1/2:7".into()))
    );
    assert!(routes.find("elsewhere", "t.v1").is_none());

    let http = Routes::new(&[route(
        None,
        OwnerSource::HttpUrl("http://h/b/{batch_id}".into()),
    )])
    .unwrap();
    assert_eq!(
        http.find("topic", "x").unwrap().owner(&event),
        Owner::Lookup(LookupKey::Http("http://h/b/b%201%2F2".into()))
    );
    let missing = envelope(json!({}), json!({}));
    assert!(matches!(
        http.find("topic", "x").unwrap().owner(&missing),
        Owner::Missing(_)
    ));
    assert!(matches!(by_type.owner(&missing), Owner::Missing(_)));
}

#[test]
fn only_one_route_per_topic_and_type() {
    let pointer = OwnerSource::Pointer("/u".into());
    assert!(Routes::new(&[route(None, pointer.clone()), route(None, pointer.clone())]).is_err());
    assert!(Routes::new(&[route(None, OwnerSource::Pointer("u".into()))]).is_err());
    let routes = Routes::new(&[route(Some("a"), pointer.clone()), route(None, pointer)]).unwrap();
    assert_eq!(routes.topics(), ["topic"]);
    let strict = Routes::new(&[route(Some("a"), OwnerSource::Pointer("/u".into()))]).unwrap();
    assert!(strict.find("topic", "b").is_none(), "unknown event type");
}
