//! `GET /v1/events`: every committed state change, as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::AppState;

/// A stream of `state` events (`{id, state, host, end_reason, at_ms}`); a
/// client too slow to keep up gets a `lagged` event saying how many it missed.
#[utoipa::path(get, path = "/v1/events",
    responses((status = 200, description = "text/event-stream of StateEvent", content_type = "text/event-stream")))]
pub async fn events(State(app): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(app.shared.events.subscribe()).map(|item| {
        Ok(match item {
            Ok(ev) => Event::default().event("state").json_data(&ev).unwrap_or_else(|_| Event::default()),
            Err(BroadcastStreamRecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
