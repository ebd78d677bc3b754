//! Embedding: drive a GCS upload from your own HTTP stack, here a plain hyper 1 client, against
//! the local conformance server. `cargo run -p resumable-async --example hyper_client`
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper_util::rt::TokioIo;
use resumable_async::{Exchange, RequestBody, SeekableSource, TokioTimer, drive, transport_fn};
use resumable_core::TransportFailure::{Connect, Other, Reset, TruncatedResponse};
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};

/// The whole transport: one HTTP/1.1 connection per request, any status is a response (G12).
async fn send(request: http::Request<RequestBody>) -> Exchange {
    let (mut head, body) = request.into_parts();
    let authority = head.uri.authority().ok_or(Other)?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|_| Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Connect)?;
    tokio::spawn(connection);
    let host = http::HeaderValue::from_str(authority.as_str()).map_err(|_| Other)?;
    head.headers.insert(http::header::HOST, host);
    head.uri = head.uri.path_and_query().ok_or(Other)?.clone().into(); // origin-form
    // `head` carries Content-Length = the body's exact length: hyper sends it length-delimited.
    let response = sender
        .send_request(http::Request::from_parts(head, body))
        .await;
    let (head, body) = response.map_err(|_| Reset)?.into_parts();
    let limit = resumable_core::response::MAX_PARSED_BODY;
    let body: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(TruncatedResponse),
    };
    Ok(http::Response::from_parts(head, body))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = resumable_server::Server::start(Default::default())?;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
    let mut config = GcsConfig::new(Some(data.len() as u64));
    config.chunk_size = 1 << 20;
    let url = server.gcs_xml_url("bucket", "example.bin").parse()?;
    let content_type = http::HeaderValue::from_static("application/octet-stream");
    let mut upload = GcsUpload::new(Start::Xml { url, content_type }, config)?;
    let mut source = SeekableSource::new(futures::io::Cursor::new(data.clone()));
    let transport = transport_fn(send);
    let completion = drive(&mut upload, &mut source, &transport, TokioTimer).await?;
    assert_eq!(server.object("bucket", "example.bin"), Some(data));
    println!("uploaded {} bytes, CRC32C checked", completion.size);
    assert!(completion.verified.crc32c);
    Ok(())
}
