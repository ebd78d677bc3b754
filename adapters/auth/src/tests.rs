//! Published OAuth 1.0a vectors, edge cases of the base string, the scope rule against real core
//! requests, and secrecy.

use std::collections::HashMap;
use std::ffi::OsString;
use std::time::Instant;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Uri};
use resumable_core::gcs::{GcsConfig, GcsUpload, Start};
use resumable_core::media::{ApiVersion, MediaConfig, MediaUpload};
use resumable_core::{Action, Body, SessionUri, Transmit, Upload};

use crate::oauth1::{authorize, base_string_uri, encode, signature_base_string};
use crate::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn request(method: Method, uri: &str, content_type: Option<&str>) -> Request<()> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header(CONTENT_TYPE, ct);
    }
    builder.body(()).unwrap()
}

fn authorization(request: &Request<()>) -> Option<String> {
    request
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The signature inside an `OAuth …` header value, decoded.
fn signature_of(header: &str) -> String {
    let start = header.find("oauth_signature=\"").unwrap() + "oauth_signature=\"".len();
    let end = start + header[start..].find('"').unwrap();
    let encoded = &header[start..end];
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

/// HMAC-SHA1 with the RFC 5849 3.4.2 key over a base string, for vectors that publish the
/// base string and the signature but sign protocol parameters the signer never sends
/// (`oauth_callback`, `oauth_verifier`) or leave out `oauth_version`.
fn hmac(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let key = format!(
        "{}&{}",
        encode(consumer_secret.as_bytes()),
        encode(token_secret.as_bytes())
    );
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(base_string.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Twitter's documented credentials ("Creating a signature", developer.x.com).
fn twitter_keys() -> OAuth1Keys {
    OAuth1Keys::new(
        "xvz1evFS4wEEPTGEFPHBog",
        "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
        "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
        "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
    )
}

const TWITTER_NONCE: &str = "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg";
const TWITTER_TIMESTAMP: u64 = 1318622958;
/// The form body exactly as the documentation's raw request sends it (lowercase hex escapes).
const TWITTER_BODY: &str =
    "status=Hello%20Ladies%20%2b%20Gentlemen%2c%20a%20signed%20OAuth%20request%21";

fn fixed_signer(keys: OAuth1Keys, scope: SignScope, timestamp: u64, nonce: &str) -> OAuth1Signer {
    let nonce = nonce.to_owned();
    OAuth1Signer::new(keys, scope)
        .with_clock(move || timestamp)
        .with_nonces(move || nonce.clone())
}

fn form(text: &str) -> Body {
    Body::bytes(Bytes::from(text.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Published vectors

// Twitter developer documentation, "Creating a signature"
// (https://developer.x.com/en/docs/authentication/oauth-1-0a/creating-a-signature, the
// api.twitter.com/1.1 version of the page): the whole signer path, from a request with a query
// and a form body to the `Authorization` header of "Authorizing a request". M7: query and form
// fields are signed.
#[test]
fn twitter_creating_a_signature_v1_1() {
    let mut signer = fixed_signer(
        twitter_keys(),
        SignScope::twitter(),
        TWITTER_TIMESTAMP,
        TWITTER_NONCE,
    );
    let mut req = request(
        Method::POST,
        "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
        Some("application/x-www-form-urlencoded"),
    );
    let outcome = signer.sign(&mut req, &form(TWITTER_BODY)).unwrap();
    assert_eq!(outcome, Signed::Applied);
    let header = authorization(&req).unwrap();
    assert_eq!(
        header,
        "OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\", \
         oauth_nonce=\"kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg\", \
         oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\", \
         oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"1318622958\", \
         oauth_token=\"370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb\", \
         oauth_version=\"1.0\""
    );
    assert_eq!(signature_of(&header), "hCtSmYh+iHYCEqBWrE7C7hYmtUk=");
    assert!(req.headers()[AUTHORIZATION].is_sensitive());
}

// The same page in its older form (dev.twitter.com, `https://api.twitter.com/1/statuses/
// update.json`), which also publishes the parameter string, the base string and the signature.
#[test]
fn twitter_creating_a_signature_v1_base_string() {
    let uri: Uri = "https://api.twitter.com/1/statuses/update.json?include_entities=true"
        .parse()
        .unwrap();
    let auth = authorize(
        &twitter_keys(),
        &Method::POST,
        &uri,
        Some(TWITTER_BODY.as_bytes()),
        TWITTER_TIMESTAMP,
        TWITTER_NONCE,
    )
    .unwrap();
    assert_eq!(
        auth.base_string,
        "POST&https%3A%2F%2Fapi.twitter.com%2F1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue\
         %26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uY\
         SQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26\
         oauth_token%3D370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%2\
         6status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520r\
         equest%2521"
    );
    assert_eq!(signature_of(&auth.header), "tnnArxj06cWHq44gCs1OSKk/jLY=");
}

// RFC 5849 section 3.4.1.1 (base string) with the keys of section 3.1 (client secret
// "j49sk3j29djd", token secret "dh893hdasih9"): query with an encoded `=` and `%`, an empty
// value, a repeated name, a `+` in the form body, and no oauth_version. The signature printed
// in section 3.1 ("bYT5CMsGcbgUdFHObYMEfcx6bsw=") is wrong; verified erratum EID 2550
// corrects it to "r6/TJjbCOr97/+UU0NsvSne7s5g=".
#[test]
fn rfc5849_section_3_4_1_1() {
    let uri: Uri = "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b"
        .parse()
        .unwrap();
    let protocol = [
        ("oauth_consumer_key", "9djdj82h48djs9d2"),
        ("oauth_token", "kkk9d7dh3k39sjv7"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "137131201"),
        ("oauth_nonce", "7d8f3e4a"),
    ];
    let base = signature_base_string(&Method::POST, &uri, &protocol, Some(b"c2&a3=2+q")).unwrap();
    assert_eq!(
        base,
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
         %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
         key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
         ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
         9d7dh3k39sjv7"
    );
    assert_eq!(
        hmac(&base, "j49sk3j29djd", "dh893hdasih9"),
        "r6/TJjbCOr97/+UU0NsvSne7s5g="
    );
}

// RFC 5849 section 1.2: the three signed requests of the example flow (client secret
// "kd94hf93k423kf44"), covering an empty token secret, oauth_callback and oauth_verifier.
#[test]
fn rfc5849_section_1_2_example_flow() {
    let sign = |method: Method, uri: &str, protocol: &[(&str, &str)], token_secret: &str| {
        let base = signature_base_string(&method, &uri.parse().unwrap(), protocol, None).unwrap();
        hmac(&base, "kd94hf93k423kf44", token_secret)
    };
    assert_eq!(
        sign(
            Method::POST,
            "https://photos.example.net/initiate",
            &[
                ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
                ("oauth_signature_method", "HMAC-SHA1"),
                ("oauth_timestamp", "137131200"),
                ("oauth_nonce", "wIjqoS"),
                ("oauth_callback", "http://printer.example.com/ready"),
            ],
            "",
        ),
        "74KNZJeDHnMBp0EMJ9ZHt/XKycU="
    );
    assert_eq!(
        sign(
            Method::POST,
            "https://photos.example.net/token",
            &[
                ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
                ("oauth_token", "hh5s93j4hdidpola"),
                ("oauth_signature_method", "HMAC-SHA1"),
                ("oauth_timestamp", "137131201"),
                ("oauth_nonce", "walatlh"),
                ("oauth_verifier", "hfdp7dh39dks9884"),
            ],
            "hdhd0244k9j7ao03",
        ),
        "gKgrFCywp7rO0OXSjdot/IHF7IU="
    );
    assert_eq!(
        sign(
            Method::GET,
            "http://photos.example.net/photos?file=vacation.jpg&size=original",
            &[
                ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
                ("oauth_token", "nnch734d00sl2jdk"),
                ("oauth_signature_method", "HMAC-SHA1"),
                ("oauth_timestamp", "137131202"),
                ("oauth_nonce", "chapoH"),
            ],
            "pfkkdhi9sl3r4s00",
        ),
        "MdpQcU8iPSUjWoN/UDMsK2sui9I="
    );
}

// RFC 5849 section 3.4.1.2: scheme and host lowercase, default port dropped, path as sent,
// no query.
#[test]
fn rfc5849_section_3_4_1_2_base_string_uri() {
    let base = |text: &str| base_string_uri(&text.parse().unwrap()).unwrap();
    assert_eq!(
        base("http://EXAMPLE.COM:80/r%20v/X?id=123"),
        "http://example.com/r%20v/X"
    );
    assert_eq!(
        base("https://www.example.net:8080/?q=1"),
        "https://www.example.net:8080/"
    );
    assert_eq!(base("HTTPS://Api.X.com:443/2/x"), "https://api.x.com/2/x");
    assert_eq!(base("http://h.example:443/p"), "http://h.example:443/p");
    assert_eq!(base("https://h.example:80/p"), "https://h.example:80/p");
    assert_eq!(base("https://u:pw@h.example/p"), "https://h.example/p");
    assert_eq!(base("https://[::1]:8443/p"), "https://[::1]:8443/p");
    assert_eq!(
        base_string_uri(&"/relative".parse().unwrap()),
        Err(SignError::UnsupportedUri)
    );
    assert_eq!(
        base_string_uri(&"ftp://h.example/p".parse().unwrap()),
        Err(SignError::UnsupportedUri)
    );
}

// ---------------------------------------------------------------------------------------------
// Edge cases of encoding and normalisation

// RFC 5849 3.6: unreserved characters stay, everything else is %XX with uppercase hex; UTF-8
// bytes are encoded one by one.
#[test]
fn percent_encoding_of_reserved_characters() {
    assert_eq!(encode(b"AZaz09-._~"), "AZaz09-._~");
    assert_eq!(
        encode(b"Ladies + Gentlemen, a signed OAuth request!"),
        "Ladies%20%2B%20Gentlemen%2C%20a%20signed%20OAuth%20request%21"
    );
    assert_eq!(
        encode(b":/?#[]@!$&'()*+,;=%"),
        "%3A%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D%25"
    );
    assert_eq!(encode("☃ é".as_bytes()), "%E2%98%83%20%C3%A9");
    assert_eq!(encode(b""), "");
}

fn params_of(uri: &str, form: Option<&[u8]>) -> String {
    // The third component of the base string, decoded once: the normalised parameters.
    let base = signature_base_string(&Method::GET, &uri.parse().unwrap(), &[], form).unwrap();
    let encoded = base.splitn(3, '&').nth(2).unwrap().to_owned();
    percent_encoding::percent_decode_str(&encoded)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

// 3.4.1.3.2: repeated names sort by value (byte order: "1" < "10" < "2"); names sort by their
// encoded form; empty values keep their `=`; empty pieces are no parameter.
#[test]
fn repeated_and_empty_parameters() {
    assert_eq!(
        params_of("https://h.example/p?a=2&a=1&a=10&b", None),
        "a=1&a=10&a=2&b="
    );
    assert_eq!(params_of("https://h.example/p?x=&&y=1&", None), "x=&y=1");
    // "c%40" (from c@) sorts before "c2" because '%' < '2'.
    assert_eq!(
        params_of("https://h.example/p?c2=&c%40=", None),
        "c%40=&c2="
    );
    // A '+' in the query is a space (form decoding); an encoded '+' stays a '+'.
    assert_eq!(
        params_of("https://h.example/p?q=a+b%2Bc", None),
        "q=a%20b%2Bc"
    );
    // Query and form fields interleave by name.
    assert_eq!(
        params_of("https://h.example/p?b=2", Some(b"a=1&c=3")),
        "a=1&b=2&c=3"
    );
}

// RFC 5849 3.4.1.2: the port is part of the signed URI unless it is the default.
#[test]
fn port_in_the_uri_is_signed() {
    let base = signature_base_string(
        &Method::GET,
        &"http://127.0.0.1:8080/2/x".parse().unwrap(),
        &[],
        None,
    )
    .unwrap();
    assert!(
        base.starts_with("GET&http%3A%2F%2F127.0.0.1%3A8080%2F2%2Fx&"),
        "{base}"
    );

    let keys = twitter_keys();
    let with_port = authorize(
        &keys,
        &Method::GET,
        &"https://api.x.com:8443/2/x".parse().unwrap(),
        None,
        1,
        "n",
    )
    .unwrap();
    let without = authorize(
        &keys,
        &Method::GET,
        &"https://api.x.com/2/x".parse().unwrap(),
        None,
        1,
        "n",
    )
    .unwrap();
    let default = authorize(
        &keys,
        &Method::GET,
        &"https://api.x.com:443/2/x".parse().unwrap(),
        None,
        1,
        "n",
    )
    .unwrap();
    assert_ne!(with_port.header, without.header);
    assert_eq!(default.header, without.header);
}

// M7: a multipart body (media APPEND) is never signed, even when its text looks like a form.
#[test]
fn multipart_body_is_not_signed_m7() {
    let boundary_body = Body {
        prefix: Bytes::from_static(
            b"--b\r\nContent-Disposition: form-data; name=\"command\"\r\n\r\nAPPEND\r\n--b\r\n",
        ),
        source: 0..5,
        suffix: Bytes::from_static(b"\r\n--b--\r\n"),
    };
    let uri = "https://upload.twitter.com/1.1/media/upload.json";
    let mut req = request(Method::POST, uri, Some("multipart/form-data; boundary=b"));
    assert_eq!(form_body(&req, &boundary_body), Ok(None));

    let mut signer = fixed_signer(
        twitter_keys(),
        SignScope::twitter(),
        1_700_000_000,
        "nonce1",
    );
    assert_eq!(signer.sign(&mut req, &boundary_body), Ok(Signed::Applied));
    let expected = authorize(
        &twitter_keys(),
        &Method::POST,
        &uri.parse().unwrap(),
        None,
        1_700_000_000,
        "nonce1",
    )
    .unwrap();
    assert_eq!(authorization(&req).unwrap(), expected.header);
    assert!(!expected.base_string.contains("command"));

    // A multipart body whose prefix is form-like text still is not a form.
    let tricky = form("command=APPEND&media_id=1");
    let mut req = request(Method::POST, uri, Some("multipart/form-data; boundary=b"));
    signer.sign(&mut req, &tricky).unwrap();
    assert_eq!(authorization(&req).unwrap(), expected.header);
}

// M6/M7: a JSON body (media v2 INIT, compliance C1) and a raw body (TON chunks) are not signed.
#[test]
fn json_and_raw_bodies_are_not_signed_m7() {
    let uri = "https://api.x.com/2/media/upload/initialize";
    let json = form(r#"{"total_bytes":10,"media_type":"image/gif"}"#);
    for content_type in [Some("application/json"), Some("text/plain"), None] {
        let mut req = request(Method::POST, uri, content_type);
        assert_eq!(form_body(&req, &json), Ok(None));
        let mut signer = fixed_signer(twitter_keys(), SignScope::twitter(), 1_700_000_000, "n2");
        signer.sign(&mut req, &json).unwrap();
        let expected = authorize(
            &twitter_keys(),
            &Method::POST,
            &uri.parse().unwrap(),
            None,
            1_700_000_000,
            "n2",
        )
        .unwrap();
        assert_eq!(authorization(&req).unwrap(), expected.header);
    }
}

#[test]
fn form_detection_and_shape() {
    let uri = "https://upload.twitter.com/1.1/media/upload.json";
    let body = form("command=FINALIZE&media_id=1");
    let req = request(
        Method::POST,
        uri,
        Some("Application/X-WWW-Form-Urlencoded ; charset=UTF-8"),
    );
    assert_eq!(
        form_body(&req, &body),
        Ok(Some(&b"command=FINALIZE&media_id=1"[..]))
    );

    let mut with_source = body.clone();
    with_source.source = 0..3;
    assert_eq!(
        form_body(&req, &with_source),
        Err(SignError::FormNotInPrefix)
    );

    let mut twice = request(Method::POST, uri, Some("application/x-www-form-urlencoded"));
    twice
        .headers_mut()
        .append(CONTENT_TYPE, "text/plain".parse().unwrap());
    assert_eq!(
        form_body(&twice, &body),
        Err(SignError::ConflictingContentType)
    );
}

// RFC 5849 3.5: protocol parameters go in one place only; a query that already has one is
// refused rather than signed into a request the server rejects.
#[test]
fn oauth_parameters_in_the_query_are_refused() {
    let mut signer = fixed_signer(twitter_keys(), SignScope::twitter(), 1_700_000_000, "n");
    let mut req = request(Method::GET, "https://api.x.com/2/x?oauth_nonce=1", None);
    assert_eq!(
        signer.sign(&mut req, &Body::empty()),
        Err(SignError::ProtocolParameterInRequest)
    );
    assert!(authorization(&req).is_none());
}

// ---------------------------------------------------------------------------------------------
// Fresh nonce and timestamp per request

#[test]
fn every_signing_gets_a_fresh_nonce_and_timestamp() {
    let mut clock = 1_700_000_000u64;
    let mut n = 0u32;
    let mut signer = OAuth1Signer::new(twitter_keys(), SignScope::twitter())
        .with_clock(move || {
            clock += 1;
            clock
        })
        .with_nonces(move || {
            n += 1;
            format!("nonce{n}")
        });
    let mut req = request(
        Method::GET,
        "https://api.x.com/2/media/upload?command=STATUS&media_id=1",
        None,
    );
    signer.sign(&mut req, &Body::empty()).unwrap();
    let first = authorization(&req).unwrap();
    // A retry of the same request: signed again, the old header replaced (not appended).
    signer.sign(&mut req, &Body::empty()).unwrap();
    let second = authorization(&req).unwrap();
    assert_eq!(req.headers().get_all(AUTHORIZATION).iter().count(), 1);
    assert!(first.contains("oauth_nonce=\"nonce1\"") && first.contains("1700000001"));
    assert!(second.contains("oauth_nonce=\"nonce2\"") && second.contains("1700000002"));
    assert_ne!(signature_of(&first), signature_of(&second));

    // The real sources too.
    let mut real = OAuth1Signer::new(twitter_keys(), SignScope::twitter());
    let mut a = request(Method::GET, "https://api.x.com/2/x", None);
    let mut b = request(Method::GET, "https://api.x.com/2/x", None);
    real.sign(&mut a, &Body::empty()).unwrap();
    real.sign(&mut b, &Body::empty()).unwrap();
    assert_ne!(authorization(&a), authorization(&b));
}

#[test]
fn broken_clock_and_nonce_sources_are_errors() {
    let mut req = request(Method::GET, "https://api.x.com/2/x", None);
    let mut stopped = OAuth1Signer::new(twitter_keys(), SignScope::twitter()).with_clock(|| 0);
    assert_eq!(
        stopped.sign(&mut req, &Body::empty()),
        Err(SignError::ClockBeforeEpoch)
    );
    let mut empty =
        OAuth1Signer::new(twitter_keys(), SignScope::twitter()).with_nonces(String::new);
    assert_eq!(
        empty.sign(&mut req, &Body::empty()),
        Err(SignError::EmptyNonce)
    );
    assert!(authorization(&req).is_none());
}

// ---------------------------------------------------------------------------------------------
// The scope rule against the core's own requests

/// The XML start (G1) of a GCS upload to a signed URL on `origin`, and the first chunk to the
/// session URI the start answer names.
fn gcs_requests(origin: &str) -> (Transmit, Transmit) {
    let source = vec![5u8; 1000];
    let start = Start::Xml {
        url: format!(
            "{origin}/compliance-uploads/1/ids.txt?X-Goog-Algorithm=GOOG4-RSA-SHA256\
             &X-Goog-Credential=c%40example.iam.gserviceaccount.com&X-Goog-Signature=00ff"
        )
        .parse()
        .unwrap(),
        content_type: http::HeaderValue::from_static("text/plain"),
    };
    let mut upload = GcsUpload::new(start, GcsConfig::new(Some(source.len() as u64))).unwrap();
    let now = Instant::now();
    let mut first = None;
    loop {
        match upload.poll_action(now) {
            Action::Read(read) => {
                let (a, b) = (read.range.start as usize, read.range.end as usize);
                upload
                    .handle_read(now, read.range.start, &source[a..b.min(source.len())])
                    .unwrap();
            }
            Action::Send(send) => match first {
                None => {
                    let location = format!(
                        "{origin}/upload/storage/v1/b/compliance-uploads/o?uploadType=resumable&upload_id=SESSION123"
                    );
                    let response = http::Response::builder()
                        .status(201)
                        .header("location", location)
                        .body(Bytes::new())
                        .unwrap();
                    upload.handle_response(now, send.id, response).unwrap();
                    first = Some(send);
                }
                Some(start) => return (start, send),
            },
            other => panic!("unexpected {other:?}"),
        }
    }
}

// G1, C2, G3-G10: a signed URL and a session URI never get an Authorization header, from
// either signer, even when the caller marked their origin as an API origin (the conformance
// server serves the API and its GCS side from one origin).
#[test]
fn session_uris_and_signed_urls_never_get_authorization() {
    for origin in ["http://127.0.0.1:9000", "https://storage.googleapis.com"] {
        let (mut start, mut chunk) = gcs_requests(origin);
        assert!(
            chunk
                .request
                .uri()
                .to_string()
                .contains("upload_id=SESSION123")
        );
        let scope = SignScope::twitter().allow(origin).unwrap();
        let mut signers: Vec<Box<dyn Signer + Send>> = vec![
            Box::new(BearerSigner::new(
                BearerToken::new("AAAATOKEN").unwrap(),
                scope.clone(),
            )),
            Box::new(fixed_signer(
                twitter_keys(),
                scope.clone(),
                1_700_000_000,
                "n",
            )),
            Box::new(
                Credentials::Bearer(BearerToken::new("T").unwrap()).into_signer(scope.clone()),
            ),
        ];
        for signer in &mut signers {
            for send in [&mut start, &mut chunk] {
                assert_eq!(
                    signer.sign_send(send),
                    Ok(Signed::Skipped(SkipReason::CapabilityUrl))
                );
                assert!(!send.request.headers().contains_key(AUTHORIZATION));
            }
        }
    }

    // Without the origin in scope the answer is the same, for another reason.
    let (mut start, mut chunk) = gcs_requests("https://storage.googleapis.com");
    let mut bearer = BearerSigner::new(BearerToken::new("T").unwrap(), SignScope::twitter());
    assert!(matches!(
        bearer.sign_send(&mut start),
        Ok(Signed::Skipped(_))
    ));
    assert!(matches!(
        bearer.sign_send(&mut chunk),
        Ok(Signed::Skipped(_))
    ));
    assert!(!start.request.headers().contains_key(AUTHORIZATION));
    assert!(!chunk.request.headers().contains_key(AUTHORIZATION));
}

// A session URI without any capability marker is kept unsigned by excluding it.
#[test]
fn excluded_session_uri_never_gets_authorization() {
    let session = SessionUri::parse("https://api.x.com/sessions/42?resume=1").unwrap();
    let mut signer = BearerSigner::new(
        BearerToken::new("T").unwrap(),
        SignScope::twitter().exclude(&session),
    );
    let mut req = request(Method::PUT, "https://api.x.com/sessions/42?resume=1", None);
    assert_eq!(
        signer.sign(&mut req, &Body::empty()),
        Ok(Signed::Skipped(SkipReason::Excluded))
    );
    assert!(authorization(&req).is_none());

    // Learnt mid-flow: excluded through the signer's scope.
    let mut any = Credentials::OAuth1(twitter_keys()).into_signer(SignScope::twitter());
    let upload_url: Uri = "https://api.x.com/uploads/7".parse().unwrap();
    any.scope_mut().add_exclusion(&upload_url);
    let mut req = request(Method::PUT, "https://api.x.com/uploads/7", None);
    assert_eq!(
        any.sign(&mut req, &Body::empty()),
        Ok(Signed::Skipped(SkipReason::Excluded))
    );
    assert!(authorization(&req).is_none());
}

// C1/C3: the app-only Bearer goes to API requests only.
#[test]
fn bearer_signs_api_requests() {
    let scope = SignScope::new().allow("http://127.0.0.1:9000/2").unwrap();
    let mut signer = BearerSigner::new(BearerToken::new("AAAA%2FBBB%3D").unwrap(), scope);
    let mut job = request(
        Method::POST,
        "http://127.0.0.1:9000/2/compliance/jobs",
        Some("application/json"),
    );
    assert_eq!(signer.sign(&mut job, &Body::empty()), Ok(Signed::Applied));
    assert_eq!(authorization(&job).unwrap(), "Bearer AAAA%2FBBB%3D");
    assert!(job.headers()[AUTHORIZATION].is_sensitive());

    let mut other = request(
        Method::GET,
        "http://127.0.0.1:9000/compliance-results/1/results.json",
        None,
    );
    assert_eq!(
        signer.sign(&mut other, &Body::empty()),
        Ok(Signed::Skipped(SkipReason::OutOfScope))
    );
    assert!(authorization(&other).is_none());

    assert!(BearerToken::new("").is_err());
    assert!(BearerToken::new("has space").is_err());
    assert!(BearerToken::new("line\nbreak").is_err());
    assert!(BearerToken::new("ünicode").is_err());
}

// M1, M2, M7: the core's v1.1 INIT form is signed with its fields; its APPEND is not.
#[test]
fn media_v1_1_init_signs_form_fields_and_append_does_not() {
    let mut config = MediaConfig::new(ApiVersion::v1_1(), 10, "image/gif");
    config.segment_size = 10;
    let mut upload = MediaUpload::new(config).unwrap();
    let now = Instant::now();
    let Action::Send(mut init) = upload.poll_action(now) else {
        panic!("INIT first")
    };
    let mut signer = fixed_signer(twitter_keys(), SignScope::twitter(), 1_700_000_000, "init");
    assert_eq!(signer.sign_send(&mut init), Ok(Signed::Applied));
    let form = form_body(&init.request, &init.body).unwrap().unwrap();
    assert!(form.starts_with(b"command=INIT"));
    let expected = authorize(
        &twitter_keys(),
        &Method::POST,
        init.request.uri(),
        Some(form),
        1_700_000_000,
        "init",
    )
    .unwrap();
    assert_eq!(authorization(&init.request).unwrap(), expected.header);
    assert!(
        expected
            .base_string
            .contains("media_type%3Dimage%252Fgif%26oauth_consumer_key"),
        "{}",
        expected.base_string
    );

    let response = http::Response::builder()
        .status(200)
        .body(Bytes::from_static(
            br#"{"media_id_string":"1880028106020515840","expires_after_secs":86400}"#,
        ))
        .unwrap();
    upload.handle_response(now, init.id, response).unwrap();
    let Action::Send(mut append) = upload.poll_action(now) else {
        panic!("APPEND next")
    };
    assert_eq!(append.body.source, 0..10);
    assert_eq!(signer.sign_send(&mut append), Ok(Signed::Applied));
    let expected = authorize(
        &twitter_keys(),
        &Method::POST,
        append.request.uri(),
        None,
        1_700_000_000,
        "init",
    )
    .unwrap();
    assert_eq!(authorization(&append.request).unwrap(), expected.header);
}

#[test]
fn signers_are_send() {
    fn assert_send<T: std::marker::Send>() {}
    assert_send::<BearerSigner>();
    assert_send::<OAuth1Signer>();
    assert_send::<AnySigner>();
    assert_send::<Box<dyn Signer + std::marker::Send>>();
    let mut none = NoAuth;
    let mut req = request(Method::GET, "https://api.x.com/2/x", None);
    assert!(matches!(
        none.sign(&mut req, &Body::empty()),
        Ok(Signed::Skipped(_))
    ));
    assert!(authorization(&req).is_none());
}

// ---------------------------------------------------------------------------------------------
// Credentials from the environment, and secrecy

fn lookup(vars: &[(&'static str, &str)]) -> impl FnMut(&'static str) -> Option<OsString> {
    let map: HashMap<&'static str, OsString> =
        vars.iter().map(|(k, v)| (*k, OsString::from(v))).collect();
    move |name| map.get(name).cloned()
}

const ALL_OAUTH1: [(&str, &str); 4] = [
    (CONSUMER_KEY, "CK-PLANTED-SECRET-1"),
    (CONSUMER_SECRET, "CS-PLANTED-SECRET-2"),
    (ACCESS_TOKEN, "AT-PLANTED-SECRET-3"),
    (ACCESS_TOKEN_SECRET, "ATS-PLANTED-SECRET-4"),
];

#[test]
fn credentials_from_the_environment() {
    use CredentialKind::{Bearer, OAuth1};

    let both: Vec<(&'static str, &str)> = ALL_OAUTH1
        .iter()
        .copied()
        .chain([(BEARER_TOKEN, "BEARER-PLANTED-SECRET")])
        .collect();
    assert_eq!(
        Credentials::from_lookup(&[OAuth1, Bearer], lookup(&both))
            .unwrap()
            .kind(),
        OAuth1
    );
    assert_eq!(
        Credentials::from_lookup(&[Bearer], lookup(&both))
            .unwrap()
            .kind(),
        Bearer
    );
    assert_eq!(
        Credentials::from_lookup(&[OAuth1, Bearer], lookup(&[(BEARER_TOKEN, "B")]))
            .unwrap()
            .kind(),
        Bearer
    );

    // Nothing set: every accepted variable is named.
    let err = Credentials::from_lookup(&[OAuth1, Bearer], lookup(&[])).unwrap_err();
    assert_eq!(
        err,
        EnvError::Missing {
            accepted: vec![OAuth1, Bearer]
        }
    );
    let message = err.to_string();
    for variable in [
        BEARER_TOKEN,
        CONSUMER_KEY,
        CONSUMER_SECRET,
        ACCESS_TOKEN,
        ACCESS_TOKEN_SECRET,
    ] {
        assert!(message.contains(variable), "{message}");
    }

    // Partly set (an empty value counts as unset): the missing ones are named, no fallback.
    let partial = lookup(&[
        (CONSUMER_KEY, "CK-PLANTED-SECRET-1"),
        (CONSUMER_SECRET, ""),
        (ACCESS_TOKEN, "AT-PLANTED-SECRET-3"),
        (BEARER_TOKEN, "BEARER-PLANTED-SECRET"),
    ]);
    let err = Credentials::from_lookup(&[OAuth1, Bearer], partial).unwrap_err();
    assert_eq!(
        err,
        EnvError::Incomplete {
            kind: OAuth1,
            missing: vec![CONSUMER_SECRET, ACCESS_TOKEN_SECRET]
        }
    );
    assert_eq!(
        err.to_string(),
        "incomplete OAuth 1.0a user context credentials: set X_CONSUMER_SECRET, X_ACCESS_TOKEN_SECRET"
    );

    let err = Credentials::from_lookup(&[Bearer], lookup(&[(BEARER_TOKEN, "BEARER PLANTED")]))
        .unwrap_err();
    assert!(matches!(
        err,
        EnvError::Invalid {
            variable: BEARER_TOKEN,
            ..
        }
    ));

    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        let err =
            Credentials::from_lookup(&[Bearer], |_| Some(OsString::from_vec(vec![0xff, 0xfe])))
                .unwrap_err();
        assert_eq!(
            err,
            EnvError::Invalid {
                variable: BEARER_TOKEN,
                why: "it is not valid UTF-8"
            }
        );
    }

    // The real environment is read through the same path (whatever it holds here).
    let _ = Credentials::from_env();
}

// Secrets never appear in Debug, Display or any error.
#[test]
fn secrets_never_appear_in_debug_display_or_errors() {
    let planted = [
        "CK-PLANTED-SECRET-1",
        "CS-PLANTED-SECRET-2",
        "AT-PLANTED-SECRET-3",
        "ATS-PLANTED-SECRET-4",
        "BEARER-PLANTED-SECRET",
        "PLANTED",
    ];
    let mut shown: Vec<String> = Vec::new();
    let mut show = |value: &dyn std::fmt::Debug, display: Option<&dyn std::fmt::Display>| {
        shown.push(format!("{value:?}"));
        shown.push(format!("{value:#?}"));
        if let Some(display) = display {
            shown.push(display.to_string());
        }
    };

    let oauth1 = Credentials::from_lookup(&[CredentialKind::OAuth1], lookup(&ALL_OAUTH1)).unwrap();
    let bearer = Credentials::from_lookup(
        &[CredentialKind::Bearer],
        lookup(&[(BEARER_TOKEN, "BEARER-PLANTED-SECRET")]),
    )
    .unwrap();
    show(&oauth1, Some(&oauth1));
    show(&bearer, Some(&bearer));
    if let Credentials::OAuth1(keys) = &oauth1 {
        show(keys, None);
    }
    if let Credentials::Bearer(token) = &bearer {
        show(token, None);
    }
    let session = SessionUri::parse("https://h.example/s?upload_id=PLANTED").unwrap();
    let scope = SignScope::twitter().exclude(&session);
    show(&scope, None);
    let mut oauth1_signer = oauth1.clone().into_signer(scope.clone());
    let mut bearer_signer = bearer.clone().into_signer(scope.clone());
    show(&oauth1_signer, None);
    show(&bearer_signer, None);

    // Signed requests, through the core's redacting Debug of a Transmit.
    let mut config = MediaConfig::new(ApiVersion::v1_1(), 10, "image/gif");
    config.segment_size = 10;
    let mut upload = MediaUpload::new(config).unwrap();
    let Action::Send(mut send) = upload.poll_action(Instant::now()) else {
        panic!()
    };
    oauth1_signer.sign_send(&mut send).unwrap();
    show(&send, None);
    bearer_signer.sign_send(&mut send).unwrap();
    show(&send, None);
    show(&send.request.headers()[AUTHORIZATION], None);

    // Every error this crate makes, including from planted values.
    let errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(
            Credentials::from_lookup(
                &[CredentialKind::Bearer],
                lookup(&[(BEARER_TOKEN, "BAD PLANTED")]),
            )
            .unwrap_err(),
        ),
        Box::new(
            Credentials::from_lookup(&[CredentialKind::OAuth1], lookup(&ALL_OAUTH1[..3]))
                .unwrap_err(),
        ),
        Box::new(Credentials::from_lookup(&[CredentialKind::Bearer], lookup(&[])).unwrap_err()),
        Box::new(BearerToken::new("BAD PLANTED").unwrap_err()),
        Box::new(ApiPrefix::parse("https://u:PLANTED@h.example/").unwrap_err()),
        Box::new(ApiPrefix::parse("https://h.example/?PLANTED").unwrap_err()),
        Box::new(SignError::UnsupportedUri),
        Box::new(SignError::ProtocolParameterInRequest),
        Box::new(SignError::FormNotInPrefix),
        Box::new(SignError::ConflictingContentType),
        Box::new(SignError::ClockBeforeEpoch),
        Box::new(SignError::EmptyNonce),
        Box::new(SignError::Randomness),
        Box::new(SignError::InvalidHeader),
    ];
    for error in &errors {
        show(error, Some(error));
    }
    for text in &shown {
        for secret in planted {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
    }
}
