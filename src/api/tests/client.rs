//! Unit tests of `api::client`.

use super::*;

#[test]
fn parses_urls() {
    let u = ServerUrl::parse("http://127.0.0.1:9922").unwrap();
    assert_eq!(u.port, 9922);
    assert_eq!(u.to_string(), "http://127.0.0.1:9922");
    let u = ServerUrl::parse("https://haloy.example.com/").unwrap();
    assert_eq!(u.port, 443);
    assert_eq!(u.to_string(), "https://haloy.example.com");
    let u = ServerUrl::parse("http://[::1]:9922").unwrap();
    assert_eq!(u.host, "::1");
    assert_eq!(u.to_string(), "http://[::1]:9922");
    assert!(ServerUrl::parse("ftp://x").is_err());
}

#[tokio::test]
async fn refused_connection_names_the_server() {
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ApiClient::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let err = client.health().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot reach haloyd at http://127.0.0.1:{port}: connection refused")
    );
}

#[tokio::test]
async fn reads_json_errors_and_sse_from_a_real_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let resp = if req.starts_with("POST /v1/apps/web/stop") {
                assert!(req.contains("authorization: Bearer tok"), "{req}");
                let body = r#"{"error":"invalid app config","problems":["a: b"]}"#;
                format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
            } else {
                let ev = r#"{"deployment_id":"01J","app":"web","time":"t","kind":"finished","message":"done","ok":true}"#;
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n: ping\n\ndata: {ev}\n\n")
            };
            s.write_all(resp.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
        }
    });
    let client = ApiClient::new(&format!("http://{addr}"), Some(SecretString::new("tok"))).unwrap();
    let err = client
        .stop("web", &StopRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(
        err.to_string(),
        format!("haloyd at http://{addr} answered 400: invalid app config\n  a: b")
    );
    let mut events = client.deploy_events("01J").await.unwrap();
    let ev: DeployEvent = events.next().await.unwrap().unwrap();
    assert_eq!(ev.ok, Some(true));
    assert!(events.next::<DeployEvent>().await.unwrap().is_none());
}
