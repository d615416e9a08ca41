//! The model client against the local OpenAI-compatible server (`gcbb_cli::model_server`) over
//! real HTTP: replies, usage, every scripted failure, timeouts, and cancellation by dropping.

use std::time::Duration;

use futures_util::StreamExt;
use gcbb::config::{LlmConfig, LlmProvider};
use gcbb::llm::{ChatMessage, Llm, ModelError, ModelEvent, Role, Usage};
use gcbb_cli::model_server::{Failure, LocalModelServer, Script};

use crate::common::eventually;
use crate::common::failing;

async fn start(script: Script) -> LocalModelServer {
    LocalModelServer::start(script)
        .await
        .expect("the local model server starts")
}

fn llm(server: &LocalModelServer, first_token: Duration, idle: Duration) -> Llm {
    Llm::new(&LlmConfig {
        provider: LlmProvider::OpenAi {
            base_url: server.base_url(),
            api_key: Some("sk-test".into()),
        },
        model: "local".into(),
        connect_timeout: Duration::from_secs(2),
        first_token_timeout: first_token,
        idle_timeout: idle,
        max_tokens: 64,
        scripted_chunk_delay: Duration::ZERO,
    })
}

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You are kind."),
        ChatMessage::new(Role::User, "hi ✨"),
    ]
}

async fn collect(llm: &Llm) -> Result<Vec<Result<ModelEvent, ModelError>>, ModelError> {
    let stream = llm.stream_reply(&messages()).await?;
    Ok(stream.collect().await)
}

/// What a model client with these timeouts collects of its reply from a server on `script`.
async fn reply_of(
    script: Script,
    first_token: Duration,
    idle: Duration,
) -> Result<Vec<Result<ModelEvent, ModelError>>, ModelError> {
    let server = start(script).await;
    collect(&llm(&server, first_token, idle)).await
}

/// The events of the reply from a server on `script` (which must start).
async fn events_of(
    script: Script,
    first_token: Duration,
    idle: Duration,
) -> Vec<Result<ModelEvent, ModelError>> {
    reply_of(script, first_token, idle).await.unwrap()
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_reply_streams_its_text_then_the_usage_and_the_request_is_openai_shaped() {
    let server = start(Script::default()).await;
    let events = collect(&llm(&server, SECOND * 5, SECOND * 5))
        .await
        .unwrap();
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            Ok(ModelEvent::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello from the model.");
    assert_eq!(
        events.last(),
        Some(&Ok(ModelEvent::Usage(Usage {
            prompt_tokens: 11,
            completion_tokens: 5,
            total_tokens: 16
        })))
    );
    let req = server.last_request().unwrap();
    assert_eq!(req["stream"], true);
    assert_eq!(req["stream_options"]["include_usage"], true);
    assert_eq!(req["messages"][0]["role"], "system");
    assert_eq!(req["messages"][1]["content"], "hi ✨");
}

#[tokio::test]
async fn an_http_error_before_the_first_token_is_a_status_error() {
    let err = reply_of(failing(Failure::Status(500)), SECOND * 5, SECOND * 5)
        .await
        .unwrap_err();
    assert_eq!(err, ModelError::Status(500));
}

#[tokio::test]
async fn an_error_event_or_a_dropped_connection_mid_stream_ends_with_an_error() {
    for (failure, expected) in [
        (Failure::ErrorEventAfter(2), ModelError::Upstream),
        (Failure::DropAfter(2), ModelError::Interrupted),
    ] {
        let events = events_of(failing(failure.clone()), SECOND * 5, SECOND * 5).await;
        assert_eq!(
            events,
            vec![
                Ok(ModelEvent::Text("Hello".into())),
                Ok(ModelEvent::Text(" from".into())),
                Err(expected)
            ],
            "{failure:?}"
        );
    }
}

#[tokio::test]
async fn a_model_that_hangs_times_out() {
    let events = events_of(failing(Failure::Hang), Duration::from_millis(300), SECOND).await;
    assert_eq!(events, vec![Err(ModelError::Timeout)]);
}

#[tokio::test]
async fn a_silence_between_chunks_longer_than_the_idle_timeout_is_a_timeout() {
    let script = Script {
        chunk_gap: Duration::from_millis(600),
        ..Script::default()
    };
    let events = events_of(script, SECOND * 5, Duration::from_millis(200)).await;
    assert_eq!(
        events,
        vec![
            Ok(ModelEvent::Text("Hello".into())),
            Err(ModelError::Timeout)
        ]
    );
}

#[tokio::test]
async fn dropping_a_reply_closes_the_upstream_connection() {
    let server = start(Script {
        chunk_gap: Duration::from_millis(100),
        chunks: vec!["word ".into(); 50],
        ..Script::default()
    })
    .await;
    let llm = llm(&server, SECOND * 5, SECOND * 5);
    let mut stream = llm.stream_reply(&messages()).await.unwrap();
    assert!(matches!(stream.next().await, Some(Ok(ModelEvent::Text(_)))));
    drop(stream);
    assert!(
        eventually(|| async { server.cancelled() == 1 }).await,
        "the server never noticed"
    );
    assert_eq!(server.completed(), 0);
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let server = start(Script::default()).await;
    let llm = llm(&server, SECOND * 5, SECOND * 5);
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(collect(&llm).await.unwrap_err(), ModelError::Connect);
}
