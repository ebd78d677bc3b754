//! AWS Signature Version 4: the published vectors (AWS's SigV4 test suite and the S3 API
//! Reference's Authorization-header examples), the canonical-request rules of S12, presigned
//! URLs (S13), the environment, and secrecy.

use std::ffi::OsString;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, DATE, HOST, RANGE, USER_AGENT};
use http::{HeaderMap, HeaderName, Method, Request};
use resumable_core::Body;
use sha2::{Digest, Sha256};

use crate::sigv4::{
    AmzDate, authorization, canonical_request, credential_scope, hex, hmac_sha256, string_to_sign,
};
use crate::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

fn header(request: &Request<()>, name: &str) -> String {
    request.headers()[name].to_str().unwrap().to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// ---------------------------------------------------------------------------------------------
// AWS's SigV4 test suite ("aws-sig-v4-test-suite", 2015 edition, as AWS published it in the
// General Reference's "Signature Version 4 test suite"; the `.req`, `.creq`, `.sts` and
// `.authz` files). Service `service`, not S3, so these requests carry no
// `x-amz-content-sha256`: they go through the signer's canonical request and signature with
// the payload hash given, not through `SigV4Signer::sign`.

const SUITE_KEY_ID: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_TIME: u64 = 1_440_938_160; // 2015-08-30T12:36:00Z
const SUITE_TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

struct SuiteCase {
    name: &'static str,
    method: Method,
    /// The request target as an absolute URI (the suite's raw UTF-8 paths percent-encoded, as
    /// an `http::Uri` must hold them).
    uri: &'static str,
    /// Headers besides `Host` and `X-Amz-Date`, in the `.req` order.
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    /// Headers the suite signs that the signer does not sign unless told (`also_sign`).
    also_signed: &'static [&'static str],
    creq: String,
    authz: String,
}

fn suite_cases() -> Vec<SuiteCase> {
    let vanilla_headers =
        "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n";
    let creq = |method: &str, path: &str, query: &str| {
        format!("{method}\n{path}\n{query}\n{vanilla_headers}{EMPTY_SHA256}")
    };
    let authz = |signed: &str, signature: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={signature}"
        )
    };
    vec![
        SuiteCase {
            name: "get-vanilla",
            method: Method::GET,
            uri: "https://example.amazonaws.com/",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("GET", "/", ""),
            authz: authz(
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        },
        SuiteCase {
            name: "get-vanilla-query-order-key-case",
            method: Method::GET,
            uri: "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("GET", "/", "Param1=value1&Param2=value2"),
            authz: authz(
                "host;x-amz-date",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
        },
        SuiteCase {
            // Same name twice: sorted by value, uppercase first (byte order).
            name: "get-vanilla-query-order-key",
            method: Method::GET,
            uri: "https://example.amazonaws.com/?Param1=value2&Param1=Value1",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("GET", "/", "Param1=Value1&Param1=value2"),
            authz: authz(
                "host;x-amz-date",
                "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
            ),
        },
        SuiteCase {
            name: "get-vanilla-query-order-value",
            method: Method::GET,
            uri: "https://example.amazonaws.com/?Param1=value2&Param1=value1",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("GET", "/", "Param1=value1&Param1=value2"),
            authz: authz(
                "host;x-amz-date",
                "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
            ),
        },
        SuiteCase {
            name: "get-vanilla-empty-query-key",
            method: Method::GET,
            uri: "https://example.amazonaws.com/?Param1=value1",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("GET", "/", "Param1=value1"),
            authz: authz(
                "host;x-amz-date",
                "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
            ),
        },
        SuiteCase {
            name: "get-vanilla-query-unreserved",
            method: Method::GET,
            uri: "https://example.amazonaws.com/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq(
                "GET",
                "/",
                "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            ),
            authz: authz(
                "host;x-amz-date",
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
            ),
        },
        SuiteCase {
            // `/?ሴ=bar`.
            name: "get-vanilla-utf8-query",
            method: Method::GET,
            uri: "https://example.amazonaws.com/?%E1%88%B4=bar",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("GET", "/", "%E1%88%B4=bar"),
            authz: authz(
                "host;x-amz-date",
                "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
            ),
        },
        SuiteCase {
            name: "get-unreserved",
            method: Method::GET,
            uri: "https://example.amazonaws.com/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq(
                "GET",
                "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                "",
            ),
            authz: authz(
                "host;x-amz-date",
                "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
            ),
        },
        SuiteCase {
            // `/ሴ`: encoded once, as S3 wants it.
            name: "get-utf8",
            method: Method::GET,
            uri: "https://example.amazonaws.com/%E1%88%B4",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("GET", "/%E1%88%B4", ""),
            authz: authz(
                "host;x-amz-date",
                "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
            ),
        },
        SuiteCase {
            name: "post-vanilla",
            method: Method::POST,
            uri: "https://example.amazonaws.com/",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("POST", "/", ""),
            authz: authz(
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        },
        SuiteCase {
            name: "post-vanilla-empty-query-value",
            method: Method::POST,
            uri: "https://example.amazonaws.com/?Param1=value1",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("POST", "/", "Param1=value1"),
            authz: authz(
                "host;x-amz-date",
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
            ),
        },
        SuiteCase {
            // Several values of one name: joined by `,` in the order sent.
            name: "get-header-key-duplicate",
            method: Method::GET,
            uri: "https://example.amazonaws.com/",
            headers: &[
                ("My-Header1", "value2"),
                ("My-Header1", "value2"),
                ("My-Header1", "value1"),
            ],
            body: b"",
            also_signed: &["my-header1"],
            creq: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
            authz: authz(
                "host;my-header1;x-amz-date",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            ),
        },
        SuiteCase {
            // Values trimmed, inner runs of spaces made one (inside quotes too).
            name: "get-header-value-trim",
            method: Method::GET,
            uri: "https://example.amazonaws.com/",
            headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
            body: b"",
            also_signed: &["my-header1", "my-header2"],
            creq: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
            authz: authz(
                "host;my-header1;my-header2;x-amz-date",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ),
        },
        SuiteCase {
            // Content-Type is signed without being asked for; the body is hashed.
            name: "post-x-www-form-urlencoded",
            method: Method::POST,
            uri: "https://example.amazonaws.com/",
            headers: &[("Content-Type", "application/x-www-form-urlencoded")],
            body: b"Param1=value1",
            also_signed: &[],
            creq: "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e".to_owned(),
            authz: authz(
                "content-type;host;x-amz-date",
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            ),
        },
        SuiteCase {
            name: "post-x-www-form-urlencoded-parameters",
            method: Method::POST,
            uri: "https://example.amazonaws.com/",
            headers: &[(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf8",
            )],
            body: b"Param1=value1",
            also_signed: &[],
            creq: "POST\n/\n\ncontent-type:application/x-www-form-urlencoded; charset=utf8\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e".to_owned(),
            authz: authz(
                "content-type;host;x-amz-date",
                "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
            ),
        },
        SuiteCase {
            // post-sts-token/post-sts-header-before: the session token is signed.
            name: "post-sts-header-before",
            method: Method::POST,
            uri: "https://example.amazonaws.com/",
            headers: &[("X-Amz-Security-Token", SUITE_TOKEN)],
            body: b"",
            also_signed: &[],
            creq: format!(
                "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\nx-amz-security-token:{SUITE_TOKEN}\n\nhost;x-amz-date;x-amz-security-token\n{EMPTY_SHA256}"
            ),
            authz: authz(
                "host;x-amz-date;x-amz-security-token",
                "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
            ),
        },
        SuiteCase {
            // The later aws-signing-test-suite (v4/get-query-plus, as aws-sigv4 ships it): `+`
            // in a query is a plus sign, encoded `%2B`, not a space; a bare name gets `=`.
            name: "get-query-plus",
            method: Method::GET,
            uri: "https://example.amazonaws.com/?c+d",
            headers: &[],
            body: b"",
            also_signed: &[],
            creq: creq("GET", "/", "c%2Bd="),
            authz: authz(
                "host;x-amz-date",
                "ae684ce3aadc299e3ac7d9216fcc039c7edf40dea57cf5b3005821dd2f176654",
            ),
        },
    ]
}

// S12: canonical request, string to sign and signature of every suite case.
#[test]
fn aws_sigv4_test_suite_canonical_requests_and_signatures() {
    let credentials = AwsCredentials::new(SUITE_KEY_ID, SUITE_SECRET).unwrap();
    let date = AmzDate::from_unix(SUITE_TIME).unwrap();
    assert_eq!(date.stamp, "20150830T123600Z");
    for case in suite_cases() {
        let mut req = request(
            case.method.clone(),
            case.uri,
            &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
        );
        for (name, value) in case.headers {
            req.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let also: Vec<HeaderName> = case
            .also_signed
            .iter()
            .map(|name| HeaderName::from_static(name))
            .collect();
        let payload_hash = sha256_hex(case.body);
        let canonical = canonical_request(
            req.method(),
            req.uri(),
            req.headers(),
            &also,
            payload_hash.as_bytes(),
        )
        .unwrap();
        assert_eq!(text(&canonical.text), case.creq, "{}", case.name);
        let authz = authorization(&credentials, &date, "us-east-1", "service", &canonical);
        assert_eq!(authz, case.authz, "{}", case.name);
    }
}

// The published string to sign of post-x-www-form-urlencoded (its `.sts` file).
#[test]
fn aws_sigv4_test_suite_string_to_sign() {
    let date = AmzDate::from_unix(SUITE_TIME).unwrap();
    let case = suite_cases()
        .into_iter()
        .find(|case| case.name == "post-x-www-form-urlencoded")
        .unwrap();
    let scope = credential_scope(&date, "us-east-1", "service");
    assert_eq!(scope, "20150830/us-east-1/service/aws4_request");
    assert_eq!(
        string_to_sign(&date, &scope, case.creq.as_bytes()),
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"
    );
}

// ---------------------------------------------------------------------------------------------
// The S3 API Reference, "Signature Calculations for the Authorization Header: Transferring
// Payload in a Single Chunk", section "Examples: Signature Calculations": bucket
// `examplebucket`, us-east-1, 2013-05-24T00:00:00Z. These go through the real signer: the
// caller's `x-amz-content-sha256` is kept and signed, `x-amz-date` comes from the clock.

const S3_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const S3_TIME: u64 = 1_369_353_600; // 2013-05-24T00:00:00Z

fn s3_example_signer() -> SigV4Signer {
    let scope = SignScope::new()
        .allow("https://examplebucket.s3.amazonaws.com")
        .unwrap();
    SigV4Signer::new(
        AwsCredentials::new(S3_KEY_ID, S3_SECRET).unwrap(),
        AwsRegion::new("us-east-1").unwrap(),
        scope,
    )
    .with_clock(|| S3_TIME)
}

struct S3Example {
    name: &'static str,
    request: Request<()>,
    also_signed: Vec<HeaderName>,
    creq: String,
    /// The hash of the canonical request, the last line of the published string to sign.
    creq_sha256: &'static str,
    signed_headers: &'static str,
    signature: &'static str,
}

fn s3_examples() -> Vec<S3Example> {
    let welcome = Sha256::digest(b"Welcome to Amazon S3.");
    let put_hash = hex(&welcome);
    assert_eq!(
        put_hash,
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    vec![
        S3Example {
            name: "GET Object (Range)",
            request: request(
                Method::GET,
                "https://examplebucket.s3.amazonaws.com/test.txt",
                &[
                    ("Range", "bytes=0-9"),
                    ("x-amz-content-sha256", EMPTY_SHA256),
                ],
            ),
            also_signed: vec![RANGE],
            creq: format!(
                "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            ),
            creq_sha256: "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
            signed_headers: "host;range;x-amz-content-sha256;x-amz-date",
            signature: "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        },
        S3Example {
            // `PUT test$file.text`: `$` is encoded in the canonical URI.
            name: "PUT Object",
            request: request(
                Method::PUT,
                "https://examplebucket.s3.amazonaws.com/test$file.text",
                &[
                    ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                    ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                    ("x-amz-content-sha256", put_hash.as_str()),
                ],
            ),
            also_signed: vec![DATE],
            creq: format!(
                "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\nhost:examplebucket.s3.amazonaws.com\nx-amz-content-sha256:{put_hash}\nx-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\ndate;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n{put_hash}"
            ),
            creq_sha256: "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
            signed_headers: "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
            signature: "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        },
        S3Example {
            // `?lifecycle`: a bare name gets `=` (like `?uploads`, S2).
            name: "GET Bucket Lifecycle",
            request: request(
                Method::GET,
                "https://examplebucket.s3.amazonaws.com/?lifecycle",
                &[("x-amz-content-sha256", EMPTY_SHA256)],
            ),
            also_signed: vec![],
            creq: format!(
                "GET\n/\nlifecycle=\nhost:examplebucket.s3.amazonaws.com\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            ),
            creq_sha256: "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
            signed_headers: "host;x-amz-content-sha256;x-amz-date",
            signature: "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        },
        S3Example {
            name: "Get Bucket (List Objects)",
            request: request(
                Method::GET,
                "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J",
                &[("x-amz-content-sha256", EMPTY_SHA256)],
            ),
            also_signed: vec![],
            creq: format!(
                "GET\n/\nmax-keys=2&prefix=J\nhost:examplebucket.s3.amazonaws.com\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            ),
            creq_sha256: "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
            signed_headers: "host;x-amz-content-sha256;x-amz-date",
            signature: "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        },
    ]
}

// S12: the S3 examples, canonical request and signature, through `SigV4Signer::sign`.
#[test]
fn s3_api_reference_examples_through_the_signer() {
    for example in s3_examples() {
        let mut signer = s3_example_signer();
        for name in &example.also_signed {
            signer = signer.also_sign(name.clone());
        }
        let prepared = signer.prepare(&example.request).unwrap();
        assert_eq!(
            text(&prepared.canonical.text),
            example.creq,
            "{}",
            example.name
        );
        assert_eq!(
            sha256_hex(&prepared.canonical.text),
            example.creq_sha256,
            "{}",
            example.name
        );

        let mut req = example.request;
        let before = req.headers().clone();
        assert_eq!(
            signer.sign(&mut req, &Body::default()).unwrap(),
            Signed::Applied,
            "{}",
            example.name
        );
        assert_eq!(header(&req, "x-amz-date"), "20130524T000000Z");
        // The caller's payload hash is what was signed and what is sent.
        assert_eq!(
            req.headers()["x-amz-content-sha256"],
            before["x-amz-content-sha256"]
        );
        let value = &req.headers()[AUTHORIZATION];
        assert!(value.is_sensitive());
        assert_eq!(
            value.to_str().unwrap(),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders={}, Signature={}",
                example.signed_headers, example.signature
            ),
            "{}",
            example.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// S12 rules on requests like the core's

fn local_signer() -> SigV4Signer {
    let scope = SignScope::new().allow("http://127.0.0.1:9000").unwrap();
    SigV4Signer::new(
        AwsCredentials::new("minio-key", "minio-secret").unwrap(),
        AwsRegion::new("us-east-1").unwrap(),
        scope,
    )
    .with_clock(|| S3_TIME)
}

fn canonical_of(signer: &mut SigV4Signer, req: &Request<()>) -> String {
    text(&signer.prepare(req).unwrap().canonical.text)
}

/// The line of the canonical request at `index` (0: method, 1: path, 2: query).
fn line(canonical: &str, index: usize) -> &str {
    canonical.split('\n').nth(index).unwrap()
}

// S12, S2: `?uploads` is signed as `uploads=`; without a payload hash the signer sends and
// signs UNSIGNED-PAYLOAD.
#[test]
fn create_multipart_upload_signs_uploads_and_unsigned_payload() {
    let mut signer = local_signer();
    let mut req = request(
        Method::POST,
        "http://127.0.0.1:9000/bucket/photos/cat.jpg?uploads",
        &[("Content-Type", "image/jpeg"), ("x-amz-meta-owner", "ada")],
    );
    let canonical = canonical_of(&mut signer, &req);
    assert_eq!(
        canonical,
        "POST\n/bucket/photos/cat.jpg\nuploads=\ncontent-type:image/jpeg\nhost:127.0.0.1:9000\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:20130524T000000Z\nx-amz-meta-owner:ada\n\ncontent-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-owner\nUNSIGNED-PAYLOAD"
    );
    assert_eq!(
        signer.sign(&mut req, &Body::default()).unwrap(),
        Signed::Applied
    );
    assert_eq!(header(&req, "x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
    let authorization = header(&req, "authorization");
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=minio-key/20130524/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-owner, Signature="
        ),
        "{authorization}"
    );
    let signature = authorization.rsplit("Signature=").next().unwrap();
    assert_eq!(signature.len(), 64);
    assert!(
        signature
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

// S3, S12: an UploadPart with the part's SHA-256 and checksum; the query is sorted and the
// upload ID, which S3 hands out with characters to escape, is encoded once.
#[test]
fn upload_part_keeps_the_part_hash_and_sorts_the_query() {
    let mut signer = local_signer();
    let part_hash = sha256_hex(b"part one");
    let req = request(
        Method::PUT,
        "http://127.0.0.1:9000/bucket/key?uploadId=VXBsb2Fk%2BSUQ%3D%3D&partNumber=7",
        &[
            ("x-amz-content-sha256", part_hash.as_str()),
            ("x-amz-checksum-crc32c", "yZRlqg=="),
            ("Content-Length", "8"),
            ("User-Agent", "resumable"),
        ],
    );
    let canonical = canonical_of(&mut signer, &req);
    assert_eq!(
        canonical,
        format!(
            "PUT\n/bucket/key\npartNumber=7&uploadId=VXBsb2Fk%2BSUQ%3D%3D\nhost:127.0.0.1:9000\nx-amz-checksum-crc32c:yZRlqg==\nx-amz-content-sha256:{part_hash}\nx-amz-date:20130524T000000Z\n\nhost;x-amz-checksum-crc32c;x-amz-content-sha256;x-amz-date\n{part_hash}"
        )
    );
}

// S1, S12: the path is encoded once per segment from its decoded form; nothing is normalised.
#[test]
fn canonical_uri_is_encoded_once_per_segment_and_not_normalised() {
    let mut signer = local_signer();
    for (path, canonical) in [
        ("/b/my%20key", "/b/my%20key"),
        // Lowercase escapes come out uppercase; `$`, `+`, `!`, `'` are encoded.
        ("/b/%c3%bc$+!'", "/b/%C3%BC%24%2B%21%27"),
        // An encoded slash stays inside its segment.
        ("/b/a%2Fb", "/b/a%2Fb"),
        // Unreserved escapes are decoded.
        ("/b/%7Ea%2D", "/b/~a-"),
        // S3 keys may hold empty segments and dots: kept as they are.
        ("/b//a/./../c/", "/b//a/./../c/"),
        // A malformed escape is a literal `%`.
        ("/b/100%zz", "/b/100%25zz"),
    ] {
        let req = request(Method::GET, &format!("http://127.0.0.1:9000{path}"), &[]);
        assert_eq!(
            line(&canonical_of(&mut signer, &req), 1),
            canonical,
            "{path}"
        );
    }
}

#[test]
fn canonical_query_decodes_sorts_and_encodes() {
    let mut signer = local_signer();
    for (query, canonical) in [
        ("uploads", "uploads="),
        ("uploads=", "uploads="),
        ("b=2&a=1&a=0", "a=0&a=1&b=2"),
        // Empty pieces are no parameters; `=` inside a value is encoded.
        ("&x=a=b&&", "x=a%3Db"),
        // A space, and a plus that is a plus.
        ("prefix=a%20b+c", "prefix=a%20b%2Bc"),
        (
            "list-type=2&prefix=photos%2F2013%2F",
            "list-type=2&prefix=photos%2F2013%2F",
        ),
        ("k=%7e", "k=~"),
    ] {
        let req = request(
            Method::GET,
            &format!("http://127.0.0.1:9000/b?{query}"),
            &[],
        );
        assert_eq!(
            line(&canonical_of(&mut signer, &req), 2),
            canonical,
            "{query}"
        );
    }
}

// S12: `host` carries the port unless it is the scheme's default; a Host header the request
// already has (and the driver will send) is what is signed.
#[test]
fn host_carries_a_non_default_port_only() {
    let scope = SignScope::new()
        .allow("https://s3.eu-west-1.amazonaws.com")
        .unwrap()
        .allow("http://localhost:8080")
        .unwrap()
        .allow("http://[::1]:9000")
        .unwrap();
    let mut signer = SigV4Signer::new(
        AwsCredentials::new("k", "s").unwrap(),
        AwsRegion::new("eu-west-1").unwrap(),
        scope,
    )
    .with_clock(|| S3_TIME);
    for (uri, host) in [
        (
            "https://s3.eu-west-1.amazonaws.com/b/k",
            "s3.eu-west-1.amazonaws.com",
        ),
        (
            "https://s3.eu-west-1.amazonaws.com:443/b/k",
            "s3.eu-west-1.amazonaws.com",
        ),
        ("http://localhost:8080/b/k", "localhost:8080"),
        ("http://[::1]:9000/b/k", "[::1]:9000"),
    ] {
        let req = request(Method::GET, uri, &[]);
        assert_eq!(
            line(&canonical_of(&mut signer, &req), 3),
            format!("host:{host}"),
            "{uri}"
        );
    }
    let req = request(
        Method::GET,
        "http://localhost:8080/b/k",
        &[("Host", "bucket.localhost:8080")],
    );
    assert_eq!(
        line(&canonical_of(&mut signer, &req), 3),
        "host:bucket.localhost:8080"
    );
}

// S12: which headers are signed: host, every x-amz-*, content-type and content-md5; nothing
// else unless asked; never Authorization.
#[test]
fn signed_headers_are_host_amz_content_type_and_md5() {
    let mut signer = local_signer();
    let mut req = request(
        Method::PUT,
        "http://127.0.0.1:9000/b/k?partNumber=1&uploadId=u",
        &[
            ("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", "0"),
            ("Range", "bytes=0-9"),
            ("User-Agent", "resumable/0.1"),
            ("X-Amz-Meta-Note", "  a   b  "),
            ("Authorization", "Bearer stale"),
            ("x-amz-date", "19990101T000000Z"),
        ],
    );
    let canonical = canonical_of(&mut signer, &req);
    assert!(canonical.contains("\nx-amz-meta-note:a b\n"), "{canonical}");
    assert!(!canonical.contains("19990101"), "{canonical}");
    assert!(canonical.contains(
        "\n\ncontent-md5;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-note\n"
    ));
    signer = signer.also_sign(RANGE).also_sign(AUTHORIZATION);
    let canonical = canonical_of(&mut signer, &req);
    assert!(canonical.contains(
        "\n\ncontent-md5;content-type;host;range;x-amz-content-sha256;x-amz-date;x-amz-meta-note\n"
    ));
    signer.sign(&mut req, &Body::default()).unwrap();
    assert!(header(&req, "authorization").starts_with("AWS4-HMAC-SHA256 "));
    assert_eq!(req.headers().get_all(AUTHORIZATION).iter().count(), 1);
    assert_eq!(header(&req, "x-amz-date"), "20130524T000000Z");
    assert_eq!(req.headers().get_all("x-amz-date").iter().count(), 1);
    // Unsigned headers are sent as they were.
    assert_eq!(header(&req, "user-agent"), "resumable/0.1");
    assert_eq!(req.headers()[CONTENT_LENGTH], "0");
    assert!(req.headers().contains_key(USER_AGENT));
}

// S12: every signing reads the clock (a retry is a new request with a new date).
#[test]
fn every_signing_gets_a_fresh_date_and_signature() {
    let mut now = S3_TIME;
    let mut signer = local_signer().with_clock(move || {
        now += 61;
        now
    });
    let mut first = request(Method::GET, "http://127.0.0.1:9000/b/k?uploadId=u", &[]);
    let mut second = first.clone();
    signer.sign(&mut first, &Body::default()).unwrap();
    signer.sign(&mut second, &Body::default()).unwrap();
    assert_eq!(header(&first, "x-amz-date"), "20130524T000101Z");
    assert_eq!(header(&second, "x-amz-date"), "20130524T000202Z");
    assert_ne!(
        header(&first, "authorization"),
        header(&second, "authorization")
    );
}

// A session token is sent as x-amz-security-token, marked sensitive, and signed.
#[test]
fn session_token_is_sent_and_signed() {
    let credentials = AwsCredentials::new(SUITE_KEY_ID, SUITE_SECRET)
        .unwrap()
        .with_session_token(SUITE_TOKEN)
        .unwrap();
    assert!(credentials.has_session_token());
    let scope = SignScope::new()
        .allow("https://example.amazonaws.com")
        .unwrap();
    let mut signer = SigV4Signer::new(credentials, AwsRegion::new("us-east-1").unwrap(), scope)
        .with_service("service")
        .unwrap()
        .with_clock(|| SUITE_TIME);
    let mut req = request(Method::POST, "https://example.amazonaws.com/", &[]);
    let canonical = canonical_of(&mut signer, &req);
    let expected = format!(
        "POST\n/\n\nhost:example.amazonaws.com\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:20150830T123600Z\nx-amz-security-token:{SUITE_TOKEN}\n\nhost;x-amz-content-sha256;x-amz-date;x-amz-security-token\nUNSIGNED-PAYLOAD"
    );
    assert_eq!(canonical, expected);
    signer.sign(&mut req, &Body::default()).unwrap();
    let token = &req.headers()["x-amz-security-token"];
    assert_eq!(token, SUITE_TOKEN);
    assert!(token.is_sensitive());

    // The signature, recomputed here from the key chain of S12 over the expected text.
    let mut key = hmac_sha256(format!("AWS4{SUITE_SECRET}").as_bytes(), b"20150830");
    for part in ["us-east-1", "service", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let sts = format!(
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
        sha256_hex(expected.as_bytes())
    );
    let signature = hex(&hmac_sha256(&key, sts.as_bytes()));
    assert_eq!(
        header(&req, "authorization"),
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature={signature}"
        )
    );
}

// The HMAC chain itself against the suite's published signature, so the recomputation above
// is known to be right.
#[test]
fn hmac_sha256_chain_matches_get_vanilla() {
    let creq = format!(
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"
    );
    let mut key = hmac_sha256(format!("AWS4{SUITE_SECRET}").as_bytes(), b"20150830");
    for part in ["us-east-1", "service", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let sts = format!(
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
        sha256_hex(creq.as_bytes())
    );
    assert_eq!(
        hex(&hmac_sha256(&key, sts.as_bytes())),
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

// S12 on the multipart calls (S2, S3, S5, S8), against an independent implementation: the
// `Authorization` values botocore 1.43.11's `S3SigV4Auth` gives the same requests at
// 2013-05-24T00:00:00Z with an UNSIGNED-PAYLOAD body (computed once with botocore, not here).
#[test]
fn botocore_agrees_on_multipart_requests() {
    let local = || SignScope::new().allow("http://127.0.0.1:9000").unwrap();
    let minio = || AwsCredentials::new("minio-key", "minio-secret").unwrap();
    let cases = [
        (
            SigV4Signer::new(minio(), AwsRegion::new("us-east-1").unwrap(), local()),
            request(
                Method::POST,
                "http://127.0.0.1:9000/bucket/photos/cat.jpg?uploads",
                &[("Content-Type", "image/jpeg"), ("x-amz-meta-owner", "ada")],
            ),
            "AWS4-HMAC-SHA256 Credential=minio-key/20130524/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-owner, Signature=b927352a486efebc7470c42d4d67b1286449c89bcff5530663ae068de9d3c27d",
        ),
        (
            SigV4Signer::new(minio(), AwsRegion::new("us-east-1").unwrap(), local()),
            request(
                Method::PUT,
                "http://127.0.0.1:9000/bucket/my%20key/%C3%BC.bin?partNumber=7&uploadId=VXBsb2Fk%2BSUQ%3D%3D",
                &[("x-amz-checksum-crc32c", "yZRlqg==")],
            ),
            "AWS4-HMAC-SHA256 Credential=minio-key/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-checksum-crc32c;x-amz-content-sha256;x-amz-date, Signature=7e7674152ac197763b5a7a0b04be9f283821c333f82cb7f6214ee9a743304fcc",
        ),
        (
            SigV4Signer::new(minio(), AwsRegion::new("us-east-1").unwrap(), local()),
            request(
                Method::GET,
                "http://127.0.0.1:9000/bucket/k?uploadId=abc&max-parts=1&part-number-marker=3",
                &[],
            ),
            "AWS4-HMAC-SHA256 Credential=minio-key/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=d7b0ad7203641911228bdd1352fbd08a8897c5e33308fc7fb83498a74a7ca244",
        ),
        (
            SigV4Signer::new(
                AwsCredentials::new("ASIAKEY", "tmp-secret")
                    .unwrap()
                    .with_session_token("tok/en+==")
                    .unwrap(),
                AwsRegion::new("eu-west-1").unwrap(),
                SignScope::new()
                    .allow("https://s3.eu-west-1.amazonaws.com")
                    .unwrap(),
            ),
            request(
                Method::DELETE,
                "https://s3.eu-west-1.amazonaws.com/bucket/a/b?uploadId=x",
                &[],
            ),
            "AWS4-HMAC-SHA256 Credential=ASIAKEY/20130524/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature=68bde7918c694af03f1c0bb49a3392c292fa22ef8f13b04a079a6b4717b6c9fb",
        ),
    ];
    for (signer, mut req, expected) in cases {
        let mut signer = signer.with_clock(|| S3_TIME);
        let uri = req.uri().clone();
        assert_eq!(
            signer.sign(&mut req, &Body::default()).unwrap(),
            Signed::Applied,
            "{uri}"
        );
        assert_eq!(header(&req, "authorization"), expected, "{uri}");
    }
}

// ---------------------------------------------------------------------------------------------
// S13: presigned URLs are capabilities, left exactly as given

#[test]
fn presigned_urls_are_left_untouched() {
    let mut signer = local_signer();
    for uri in [
        "http://127.0.0.1:9000/bucket/key?partNumber=3&uploadId=abc&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        "http://127.0.0.1:9000/bucket/key?x-amz-signature=00",
        "http://127.0.0.1:9000/bucket/key?X-Amz-Credential=only",
    ] {
        let mut req = request(Method::PUT, uri, &[("Content-Length", "5")]);
        let before = req.clone();
        assert_eq!(
            signer.sign(&mut req, &Body::default()).unwrap(),
            Signed::Skipped(SkipReason::CapabilityUrl),
            "{uri}"
        );
        assert_eq!(req.headers(), before.headers(), "{uri}");
        assert_eq!(req.uri(), before.uri());
    }
}

// S3, S5, S8: multipart calls carry `uploadId` (not GCS's `upload_id` capability): signed.
#[test]
fn multipart_requests_are_api_requests() {
    let mut signer = local_signer();
    for (method, uri) in [
        (Method::POST, "http://127.0.0.1:9000/b/k?uploads"),
        (
            Method::PUT,
            "http://127.0.0.1:9000/b/k?partNumber=1&uploadId=U",
        ),
        (
            Method::GET,
            "http://127.0.0.1:9000/b/k?uploadId=U&part-number-marker=2",
        ),
        (Method::POST, "http://127.0.0.1:9000/b/k?uploadId=U"),
        (Method::DELETE, "http://127.0.0.1:9000/b/k?uploadId=U"),
        (Method::GET, "http://127.0.0.1:9000/b?uploads&prefix=k"),
    ] {
        let mut req = request(method, uri, &[]);
        assert_eq!(
            signer.sign(&mut req, &Body::default()).unwrap(),
            Signed::Applied,
            "{uri}"
        );
    }
    let mut outside = request(Method::GET, "http://127.0.0.1:9001/b/k", &[]);
    assert_eq!(
        signer.sign(&mut outside, &Body::default()).unwrap(),
        Signed::Skipped(SkipReason::OutOfScope)
    );
    assert!(outside.headers().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Errors leave the request unchanged

#[test]
fn errors_leave_the_request_unchanged() {
    let cases: Vec<(u64, Request<()>, SignError)> = vec![
        (
            0,
            request(Method::GET, "http://127.0.0.1:9000/b/k", &[]),
            SignError::ClockBeforeEpoch,
        ),
        (
            253_402_300_800, // 10000-01-01T00:00:00Z
            request(Method::GET, "http://127.0.0.1:9000/b/k", &[]),
            SignError::ClockBeforeEpoch,
        ),
        (
            S3_TIME,
            request(
                Method::PUT,
                "http://127.0.0.1:9000/b/k",
                &[
                    ("x-amz-content-sha256", EMPTY_SHA256),
                    ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
                ],
            ),
            SignError::InvalidHeader,
        ),
        (
            S3_TIME,
            request(
                Method::GET,
                "http://127.0.0.1:9000/b/k",
                &[("Host", "a"), ("Host", "b")],
            ),
            SignError::InvalidHeader,
        ),
    ];
    for (now, mut req, error) in cases {
        let mut signer = local_signer().with_clock(move || now);
        let before = req.clone();
        assert_eq!(signer.sign(&mut req, &Body::default()), Err(error));
        assert_eq!(req.headers(), before.headers());
    }
    // A relative URI is never signed (out of scope); asked directly, it is refused.
    let mut signer = local_signer();
    let relative = request(Method::GET, "/b/k", &[]);
    assert_eq!(
        signer.prepare(&relative).err(),
        Some(SignError::UnsupportedUri)
    );
}

#[test]
fn amz_dates_are_utc_calendar_times() {
    for (seconds, stamp) in [
        (1, "19700101T000001Z"),
        (951_782_400, "20000229T000000Z"),
        (951_868_799, "20000229T235959Z"),
        (951_868_800, "20000301T000000Z"),
        (SUITE_TIME, "20150830T123600Z"),
        (S3_TIME, "20130524T000000Z"),
        (4_107_456_000, "21000228T000000Z"),
        (4_107_542_400, "21000301T000000Z"), // 2100 is no leap year
        (253_402_300_799, "99991231T235959Z"),
    ] {
        assert_eq!(
            AmzDate::from_unix(seconds).unwrap().stamp,
            stamp,
            "{seconds}"
        );
    }
    assert!(AmzDate::from_unix(0).is_err());
    assert!(AmzDate::from_unix(u64::MAX).is_err());
}

// ---------------------------------------------------------------------------------------------
// Credentials, region, service and the environment

#[test]
fn unusable_credentials_region_and_service_are_refused() {
    assert!(AwsCredentials::new("", "s").is_err());
    assert!(AwsCredentials::new("AKIA/X", "s").is_err());
    assert!(AwsCredentials::new("AKIA,X", "s").is_err());
    assert!(AwsCredentials::new("AKIA X", "s").is_err());
    assert!(AwsCredentials::new("AKIAÄ", "s").is_err());
    assert!(AwsCredentials::new("AKIA", "").is_err());
    let ok = AwsCredentials::new("AKIA", "s").unwrap();
    assert!(!ok.has_session_token());
    assert!(ok.clone().with_session_token("").is_err());
    assert!(ok.clone().with_session_token("a b").is_err());
    assert!(ok.clone().with_session_token("a\nb").is_err());
    for bad in ["", "us east", "us/east", "eu-west-1;", "é"] {
        assert!(AwsRegion::new(bad).is_err(), "{bad:?}");
    }
    assert_eq!(AwsRegion::new("eu-west-1").unwrap().as_str(), "eu-west-1");
    assert_eq!(
        AwsRegion::new("default_zone.1").unwrap().to_string(),
        "default_zone.1"
    );
    let signer = local_signer();
    assert!(signer.with_service("s3/x").is_err());
    let error = AwsCredentials::new("AKIA/SECRETLOOKING", "s").unwrap_err();
    assert!(!error.to_string().contains("SECRETLOOKING"), "{error}");
}

fn lookup(vars: &[(&'static str, &str)]) -> impl FnMut(&'static str) -> Option<OsString> {
    let vars: Vec<(&'static str, String)> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| OsString::from(v))
    }
}

#[test]
fn credentials_and_region_from_the_environment() {
    let credentials = AwsCredentials::from_lookup(lookup(&[
        ("AWS_ACCESS_KEY_ID", "AKIA1"),
        ("AWS_SECRET_ACCESS_KEY", "secret1"),
    ]))
    .unwrap();
    assert_eq!(
        credentials,
        AwsCredentials::new("AKIA1", "secret1").unwrap()
    );
    assert!(!credentials.has_session_token());

    let temporary = AwsCredentials::from_lookup(lookup(&[
        ("AWS_ACCESS_KEY_ID", "ASIA1"),
        ("AWS_SECRET_ACCESS_KEY", "secret1"),
        ("AWS_SESSION_TOKEN", "token1"),
    ]))
    .unwrap();
    assert!(temporary.has_session_token());
    // An empty token is no token.
    let empty_token = AwsCredentials::from_lookup(lookup(&[
        ("AWS_ACCESS_KEY_ID", "ASIA1"),
        ("AWS_SECRET_ACCESS_KEY", "secret1"),
        ("AWS_SESSION_TOKEN", ""),
    ]))
    .unwrap();
    assert!(!empty_token.has_session_token());

    assert_eq!(
        AwsCredentials::from_lookup(lookup(&[])),
        Err(AwsEnvError::Missing)
    );
    assert_eq!(
        AwsCredentials::from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", ""),
            ("X_BEARER_TOKEN", "t")
        ])),
        Err(AwsEnvError::Missing)
    );
    assert_eq!(
        AwsCredentials::from_lookup(lookup(&[("AWS_ACCESS_KEY_ID", "AKIA1")])),
        Err(AwsEnvError::Incomplete {
            missing: vec![AWS_SECRET_ACCESS_KEY]
        })
    );
    assert_eq!(
        AwsCredentials::from_lookup(lookup(&[("AWS_SESSION_TOKEN", "t")])),
        Err(AwsEnvError::Incomplete {
            missing: vec![AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]
        })
    );
    assert_eq!(
        AwsCredentials::from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", "AKIA 1"),
            ("AWS_SECRET_ACCESS_KEY", "secret1"),
        ])),
        Err(AwsEnvError::Invalid {
            variable: AWS_ACCESS_KEY_ID,
            why: "it has a space, control, non-ASCII, '/' or ',' character",
        })
    );

    assert_eq!(
        AwsRegion::from_lookup(lookup(&[
            ("AWS_REGION", "eu-central-1"),
            ("AWS_DEFAULT_REGION", "us-west-2"),
        ]))
        .unwrap()
        .as_str(),
        "eu-central-1"
    );
    assert_eq!(
        AwsRegion::from_lookup(lookup(&[
            ("AWS_REGION", ""),
            ("AWS_DEFAULT_REGION", "us-west-2")
        ]))
        .unwrap()
        .as_str(),
        "us-west-2"
    );
    assert_eq!(
        AwsRegion::from_lookup(lookup(&[])),
        Err(AwsEnvError::NoRegion)
    );
    assert_eq!(
        AwsRegion::from_lookup(lookup(&[("AWS_REGION", "us east")])),
        Err(AwsEnvError::Invalid {
            variable: AWS_REGION,
            why: "it may have only ASCII letters, digits, '-', '_' and '.'",
        })
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_variables_are_named_not_shown() {
    use std::os::unix::ffi::OsStringExt;
    let result = AwsCredentials::from_lookup(|name| match name {
        "AWS_ACCESS_KEY_ID" => Some(OsString::from("AKIA1")),
        "AWS_SECRET_ACCESS_KEY" => Some(OsString::from_vec(b"PLANTED\xff".to_vec())),
        _ => None,
    });
    let error = result.unwrap_err();
    assert_eq!(
        error,
        AwsEnvError::Invalid {
            variable: AWS_SECRET_ACCESS_KEY,
            why: "it is not valid UTF-8",
        }
    );
    assert!(!format!("{error} {error:?}").contains("PLANTED"));
}

#[test]
fn env_errors_name_the_variables() {
    assert_eq!(
        AwsEnvError::Missing.to_string(),
        "no AWS credentials in the environment: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    );
    assert_eq!(
        AwsEnvError::Incomplete {
            missing: vec![AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]
        }
        .to_string(),
        "incomplete AWS credentials: set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
    );
    assert_eq!(
        AwsEnvError::NoRegion.to_string(),
        "no AWS region in the environment: set AWS_REGION (or AWS_DEFAULT_REGION)"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrecy

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    const KEY_ID: &str = "AKIDPLANTEDKEYID";
    const SECRET: &str = "PLANTED-SECRET-wJalrXUtnFEMI";
    const TOKEN: &str = "PLANTED-SESSION-TOKEN-AQoDYXdz";
    let credentials = AwsCredentials::new(KEY_ID, SECRET)
        .unwrap()
        .with_session_token(TOKEN)
        .unwrap();
    let scope = SignScope::new().allow("http://127.0.0.1:9000").unwrap();
    let mut signer = SigV4Signer::new(
        credentials.clone(),
        AwsRegion::new("us-east-1").unwrap(),
        scope,
    )
    .with_clock(|| S3_TIME);

    let mut req = request(
        Method::PUT,
        "http://127.0.0.1:9000/b/k?partNumber=1&uploadId=u",
        &[],
    );
    signer.sign(&mut req, &Body::default()).unwrap();
    let signature = header(&req, "authorization")
        .rsplit("Signature=")
        .next()
        .unwrap()
        .to_owned();

    let env_error = AwsCredentials::from_lookup(lookup(&[
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", "PLANTED TOKEN WITH SPACES"),
    ]))
    .unwrap_err();
    let shown = [
        format!("{credentials:?}"),
        format!("{signer:?}"),
        format!("{:?}", req.headers()),
        format!("{env_error} {env_error:?}"),
        format!("{:?}", AwsCredentials::new(KEY_ID, "").unwrap_err()),
    ];
    for text in &shown {
        for planted in [KEY_ID, SECRET, TOKEN, "PLANTED TOKEN", signature.as_str()] {
            assert!(!text.contains(planted), "{planted} in {text}");
        }
    }
    assert!(shown[0].contains("session_token: true"), "{}", shown[0]);
    assert!(shown[1].contains("us-east-1"), "{}", shown[1]);
}

#[test]
fn the_signer_is_send_and_takes_a_scope_exclusion() {
    fn assert_send<T: std::marker::Send>() {}
    assert_send::<SigV4Signer>();

    let mut signer = local_signer();
    let uri: http::Uri = "http://127.0.0.1:9000/b/k?uploadId=later".parse().unwrap();
    signer.scope_mut().add_exclusion(&uri);
    let mut req = request(Method::PUT, "http://127.0.0.1:9000/b/k?uploadId=later", &[]);
    assert_eq!(
        signer.sign(&mut req, &Body::default()).unwrap(),
        Signed::Skipped(SkipReason::Excluded)
    );
    assert!(req.headers().is_empty());
    assert_eq!(signer.region().as_str(), "us-east-1");
    assert_eq!(signer.scope().prefixes().len(), 1);
}

// Only the signed names of a header map reach the canonical request.
#[test]
fn canonical_request_reads_only_the_given_headers() {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, "example.amazonaws.com".parse().unwrap());
    headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
    headers.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
    let uri: http::Uri = "https://example.amazonaws.com/".parse().unwrap();
    let canonical =
        canonical_request(&Method::GET, &uri, &headers, &[], EMPTY_SHA256.as_bytes()).unwrap();
    assert_eq!(canonical.signed_headers, "content-type;host;x-amz-date");
}
