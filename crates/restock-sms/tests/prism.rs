//! The Twilio client against Twilio's own OpenAPI description: Stoplight Prism serves it as a
//! validating mock (`prism mock`), which answers a request the description accepts and refuses
//! any other with 422 naming what is wrong. (Not `--errors`: that also fails the description's
//! own list example, whose relative `uri` breaks its `format: uri`, with a 500 to a valid
//! request; request violations answer 422 either way, as the controls below show.) Every request the client makes (create with
//! a number or a messaging service, status callback and validity period; fetch; the look-up
//! list) must pass.
//!
//! Prism comes from `scripts/tools.sh` (npm, into target/tools), as `just test` runs it first;
//! the description is tests/specs/twilio_messages_v2010.json unless `RESTOCK_TWILIO_SPEC` names
//! another.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use restock_sms::twilio::TwilioConfig;
use restock_sms::{OutboundSms, Provider, Sender, TwilioClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running Prism, killed when dropped.
struct Prism {
    child: Child,
    url: String,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_prism() -> Prism {
    let bin = root().join("target/tools/node_modules/.bin/prism");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/tools.sh (just test does)",
        bin.display()
    );
    let spec = std::env::var_os("RESTOCK_TWILIO_SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/specs/twilio_messages_v2010.json")
        });
    // A port nobody holds right now; Prism binds it a moment later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(bin)
        .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(&spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start prism");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let listening = line.contains("Prism is listening");
            seen.push(line);
            if listening {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "prism did not start: {}",
        seen.join("\n")
    );
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Prism {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn client(prism: &Prism) -> TwilioClient {
    let mut config = TwilioConfig::new(ACCOUNT, "an-auth-token");
    config.base_url = prism.url.clone();
    TwilioClient::new(config).unwrap()
}

fn text(from: Sender) -> OutboundSms {
    OutboundSms {
        reference: "018f3c2e-0000-7000-8000-000000000001".into(),
        to: "+14155550123".into(),
        from,
        body: "Back in stock: Café crème mug, size M https://ac.me/r/tok1 Reply STOP to opt out"
            .into(),
        status_callback: Some(
            "https://restock.example/webhooks/twilio/status?m=018f3c2e-0000-7000-8000-000000000001"
                .into(),
        ),
        validity: Some(Duration::from_secs(4 * 3600)),
        not_after: Some(Instant::now() + Duration::from_secs(60)),
        fallback_from: None,
        traceparent: None,
    }
}

#[tokio::test]
async fn every_request_of_the_twilio_client_is_valid_by_twilios_own_description() {
    let prism = start_prism().await;
    let client = client(&prism);

    // The control: the mock does refuse what the description does not allow (no `To`), so
    // the passes below mean something.
    let refused = reqwest::Client::new()
        .post(format!(
            "{}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
            prism.url
        ))
        .basic_auth(ACCOUNT, Some("an-auth-token"))
        .form(&[("Body", "hello"), ("From", "+14155559999")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let problem = refused.text().await.unwrap();
    assert!(problem.contains("'To'"), "{problem}");
    let refused = reqwest::Client::new()
        .get(format!(
            "{}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
            prism.url
        ))
        .basic_auth(ACCOUNT, Some("an-auth-token"))
        .query(&[("PageSize", "5000")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);

    // A create from a number, and from a messaging service, with callback and validity.
    let from_number = client
        .send(&text(Sender::Number("+14155559999".into())))
        .await;
    let receipt = match from_number {
        Ok(r) => r,
        Err(e) => panic!("create from a number refused: {e:?}"),
    };
    assert!(receipt.provider_message_id.starts_with("SM"), "{receipt:?}");
    let from_service = client
        .send(&text(Sender::MessagingService(
            "MG0123456789abcdef0123456789abcdef".into(),
        )))
        .await;
    assert!(
        from_service.is_ok(),
        "create from a messaging service refused: {from_service:?}"
    );

    // Fetch by sid and the look-up list (To, From, PageSize).
    let fetched = client.fetch(&receipt.provider_message_id).await;
    assert!(matches!(fetched, Ok(Some(_))), "fetch refused: {fetched:?}");
    let looked_up = client
        .lookup(
            &text(Sender::Number("+14155559999".into())),
            Utc::now() - chrono::Duration::days(36_500),
        )
        .await;
    assert!(looked_up.is_ok(), "look-up refused: {looked_up:?}");
}
