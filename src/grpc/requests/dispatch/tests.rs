//! The dispatch service's request commands: every bad field named, page tokens bound.

use super::*;
use crate::grpc::requests::test_support::{fields, tokens};

#[test]
fn list_releases_names_every_bad_field() {
    let req = pb::ListReleasesRequest {
        tenant_id: String::new(),
        page_size: -1,
        states: vec![pb::ReleaseState::Paused as i32, 99],
        restock_id: "not-a-uuid".into(),
        page_token: "garbage".into(),
        create_time_start: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        create_time_end: Some(prost_types::Timestamp {
            seconds: 1_600_000_000,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut got = fields(ListReleases::parse(req, &tokens()).unwrap_err());
    got.sort();
    assert_eq!(
        got,
        [
            "create_time_end",
            "page_size",
            "page_token",
            "restock_id",
            "states[1]",
            "tenant_id"
        ]
    );
}

#[test]
fn list_releases_dedups_states_and_caps_the_page() {
    let req = pb::ListReleasesRequest {
        tenant_id: "demo".into(),
        page_size: 100_000,
        states: vec![
            pb::ReleaseState::Paused as i32,
            pb::ReleaseState::Sending as i32,
            pb::ReleaseState::Paused as i32,
        ],
        ..Default::default()
    };
    let cmd = ListReleases::parse(req, &tokens()).unwrap();
    assert_eq!(
        cmd.filter.states,
        [ReleaseState::Sending, ReleaseState::Paused]
    );
    assert_eq!(cmd.page_size, page_size(100_000));
}

#[test]
fn list_messages_names_every_bad_field() {
    let req = pb::ListMessagesRequest {
        tenant_id: "demo".into(),
        page_size: -5,
        phone_number: "12".into(),
        statuses: vec![pb::MessageStatus::Unspecified as i32],
        subscription_id: "x".into(),
        ..Default::default()
    };
    let mut got = fields(ListMessages::parse(req, &tokens()).unwrap_err());
    got.sort();
    assert_eq!(
        got,
        [
            "page_size",
            "phone_number",
            "statuses[0]",
            "subscription_id"
        ]
    );
}

#[test]
fn watch_interval_is_bounded() {
    let watch = |seconds: i64, nanos: i32| {
        WatchRelease::try_from(pb::WatchReleaseRequest {
            tenant_id: "demo".into(),
            release_id: Uuid::nil().to_string(),
            min_interval: Some(prost_types::Duration { seconds, nanos }),
        })
    };
    assert_eq!(watch(0, 100_000_000).unwrap().interval, MIN_WATCH_INTERVAL);
    assert_eq!(watch(60, 0).unwrap().interval, MAX_WATCH_INTERVAL);
    assert_eq!(fields(watch(0, 99_999_999).unwrap_err()), ["min_interval"]);
    assert_eq!(fields(watch(61, 0).unwrap_err()), ["min_interval"]);
    assert_eq!(fields(watch(-1, 0).unwrap_err()), ["min_interval"]);
    let default = WatchRelease::try_from(pb::WatchReleaseRequest {
        tenant_id: "demo".into(),
        release_id: Uuid::nil().to_string(),
        min_interval: None,
    })
    .unwrap();
    assert_eq!(default.interval, DEFAULT_WATCH_INTERVAL);
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

#[test]
fn an_export_needs_a_tenant_and_a_forward_period() {
    let fields = |req: pb::ExportMessagesRequest| match ExportMessages::try_from(req) {
        Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|(f, _)| f).collect::<Vec<_>>(),
        other => panic!("not INVALID_ARGUMENT: {other:?}"),
    };
    assert_eq!(
        fields(pb::ExportMessagesRequest::default()),
        ["tenant_id", "start_time", "end_time"]
    );
    assert_eq!(
        fields(pb::ExportMessagesRequest {
            tenant_id: "demo".into(),
            start_time: ts(200),
            end_time: ts(100),
        }),
        ["end_time"]
    );
    let ok = ExportMessages::try_from(pb::ExportMessagesRequest {
        tenant_id: "demo".into(),
        start_time: ts(100),
        end_time: ts(200),
    })
    .unwrap();
    assert_eq!((ok.from.timestamp(), ok.before.timestamp()), (100, 200));
}
