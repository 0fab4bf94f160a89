//! The one test harness: a fresh database per test, the real server on free ports, a method per
//! RPC ([`rpc`]), an HTTP client for links, webhooks and metrics ([`http`]), workers a test may
//! step ([`TestApp::step`]) and the fixtures several test files share ([`fixtures`]).

mod app;
mod db;
mod fixtures;
mod http;
mod rpc;

pub use app::*;
pub use db::*;
pub use fixtures::*;
pub use http::*;
