//! How a request goes out: the [`Transport`] trait, implemented by
//! [`ReqwestTransport`](crate::ReqwestTransport) (the `reqwest` feature), by closures (see
//! [`transport_fn`]), and by anything you write over your own HTTP stack.

use std::future::Future;

use bytes::Bytes;
use resumable_core::TransportFailure;

use crate::body::RequestBody;

/// What a transport returns for one request: the complete response (any status), or why none
/// arrived.
pub type Exchange = Result<http::Response<Bytes>, TransportFailure>;

/// Sends one request and returns its complete response.
///
/// The driver calls [`Transport::send`] for every `Send` action, feeding the body while the
/// returned future runs, and hands the result to the upload. When the upload allows several
/// requests in flight, several futures from one transport run at once (an HTTP client's
/// connection pool serves them). The future may be dropped at any point (the upload future
/// was dropped, or the driver stopped the body): dropping it must abandon the request.
pub trait Transport {
    /// Sends `request` (method, URI and headers exactly as given; they include
    /// `Content-Length`, which equals [`RequestBody::len`]) with its body streamed, and returns
    /// the response whatever its status: a `308` is not a redirect to follow and a 4xx or 5xx
    /// is not an error (G12). Keep at most
    /// [`MAX_PARSED_BODY`](resumable_core::response::MAX_PARSED_BODY) bytes of the response
    /// body (the core reads no more). Send the body length-delimited, never chunked, and
    /// never fewer bytes than `Content-Length`: if the body yields an error, fail the request.
    ///
    /// # Errors
    /// A [`TransportFailure`] when no complete response arrived: connection refused, reset,
    /// timed out, or a response cut short. The upload then queries the server's state before
    /// it sends more (G8).
    fn send(&self, request: http::Request<RequestBody>) -> impl Future<Output = Exchange>;
}

impl<F, Fut> Transport for F
where
    F: Fn(http::Request<RequestBody>) -> Fut,
    Fut: Future<Output = Exchange>,
{
    fn send(&self, request: http::Request<RequestBody>) -> impl Future<Output = Exchange> {
        self(request)
    }
}

/// Returns `f` as a [`Transport`]; it only tells the compiler the closure's argument type, so
/// `transport_fn(|request| async move { … })` needs no annotations.
pub fn transport_fn<F, Fut>(f: F) -> F
where
    F: Fn(http::Request<RequestBody>) -> Fut,
    Fut: Future<Output = Exchange>,
{
    f
}
