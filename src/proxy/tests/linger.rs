use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (server, client)
}

#[test]
fn hyper_dropping_the_io_hands_it_back() {
    let (lent, mut back) = Reclaim::new(vec![1u8, 2, 3]);
    assert!(back.try_recv().is_err(), "given back while still lent");
    drop(lent);
    assert_eq!(back.try_recv().ok(), Some(vec![1, 2, 3]));
}

#[tokio::test]
async fn close_reads_until_the_client_closes_and_the_client_sees_a_clean_end() {
    let (server, mut client) = pair().await;
    client.write_all(&[b'x'; 100_000]).await.expect("write");
    let closing = tokio::spawn(close(server));
    let mut got = Vec::new();
    assert_eq!(client.read_to_end(&mut got).await.expect("clean end"), 0);
    client
        .write_all(b"more")
        .await
        .expect("still read by the proxy");
    drop(client);
    tokio::time::timeout(READ_TIMEOUT, closing)
        .await
        .expect("close waited past the client's close")
        .expect("close task");
}

const SHORT_READ: Duration = Duration::from_millis(200);
const SHORT_MAX: Duration = Duration::from_millis(800);

#[tokio::test]
async fn close_gives_up_on_a_client_that_neither_sends_nor_closes() {
    let (server, _silent) = pair().await;
    let started = Instant::now();
    close_within(server, SHORT_READ, SHORT_MAX).await;
    let took = started.elapsed();
    assert!(took >= SHORT_READ && took < SHORT_MAX, "{took:?}");
}

#[tokio::test]
async fn close_stops_after_max_linger_however_much_the_client_sends() {
    let (server, mut client) = pair().await;
    let sender = tokio::spawn(async move {
        while client.write_all(b"x").await.is_ok() {
            tokio::time::sleep(SHORT_READ / 4).await;
        }
    });
    let started = Instant::now();
    close_within(server, SHORT_READ, SHORT_MAX).await;
    let took = started.elapsed();
    assert!(took >= SHORT_MAX && took < SHORT_MAX * 2, "{took:?}");
    sender.abort();
}
