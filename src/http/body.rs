//! Reading a request body: the handlers that take one (`POST /graphql`, `POST /graphql/stream`)
//! read it here, at most `limit` bytes and within `--body-timeout` of the request's arrival.
//!
//! A body announced larger than the limit (`Content-Length`) is refused before a byte of it is
//! read; one that does not arrive in time is answered `408` (and `JsonErrors` closes an HTTP/1
//! connection after a 408 or 413: the rest of the body is still on it). The deadline is the
//! whole body's, so it is also a minimum rate: `--max-body-bytes` per `--body-timeout`.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// The request body, at most `limit` bytes, within `deadline`; else the error response (413
/// past the limit, 408 past the deadline, 400 when the connection fails), which `JsonErrors`
/// turns into a GraphQL-shaped body.
///
/// Read frame by frame rather than by axum's `Bytes` extractor, which wraps the body in a
/// second box to limit it and gathers the frames in a queue: a cached read's body is one
/// frame, kept as it arrives. The timer is armed only if the body is not there at once.
pub async fn read(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, Response> {
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    match tokio::time::timeout(deadline, read_frames(body, limit)).await {
        Ok(result) => result,
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s (--body-timeout); send it in one go, or a smaller one",
                deadline.as_secs_f64()
            ),
        )
            .into_response()),
    }
}

fn too_large() -> Response {
    (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response()
}

async fn read_frames(mut body: Body, limit: usize) -> Result<Bytes, Response> {
    // The first frame as it came; a copy only when a second one follows.
    let (mut whole, mut joined) = (Bytes::new(), bytes::BytesMut::new());
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                return Err(
                    (StatusCode::BAD_REQUEST, format!("Failed to buffer the request body: {e}")).into_response()
                );
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        if whole.len() + joined.len() + data.len() > limit {
            return Err(too_large());
        }
        if whole.is_empty() && joined.is_empty() {
            whole = data;
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(&std::mem::take(&mut whole));
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(if joined.is_empty() { whole } else { joined.freeze() })
}
