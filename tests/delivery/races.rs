//! The resume race, widened on purpose: the server delays each history read after the
//! subscription acknowledgement and again before the merge (`WS_DEBUG_RESUME_DELAY_MS`), while
//! messages are published at about 1,000 a second and the client keeps reconnecting with
//! `since`. Every offset must arrive exactly once, in order.

use std::time::Duration;

use super::*;

#[actix_web::test]
async fn resumes_under_load_with_injected_delays_lose_and_repeat_nothing() {
    let redis = RedisServer::start().await;
    let settings = TestSettings::with_redis(&redis)
        .set("history.size", 10_000)
        .set("history.max_replay", 10_000)
        .env("WS_DEBUG_RESUME_DELAY_MS", "150,150");
    let server = Server::start(settings).await;
    server.wait_readyz(200, STARTUP_DEADLINE).await;
    let url = redis.url();
    let publishing = tokio::spawn(async move {
        let client = redis::Client::open(url).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let mut last = 0;
        for n in 0..3000 {
            last = fcall_publish(&mut conn, "race", n).await;
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        last
    });
    let mut client = connect_v2(&server, "race", None).await;
    let (epoch, start, _) = welcome(&mut client).await;
    let mut seen = Vec::new();
    let mut position = start;
    for _ in 0..6 {
        // Take a few messages, hang up, resume from the last one processed.
        for _ in 0..20 {
            let frame = recv_json(&mut client).await;
            assert_eq!(frame["type"], "message", "{frame}");
            position = frame["offset"].as_u64().expect("durable");
            seen.push(position);
        }
        client.close().await;
        client = connect_v2(&server, "race", Some(&format!("{epoch}:{position}"))).await;
        let (now, _, recovered) = welcome(&mut client).await;
        assert_eq!((now.as_str(), recovered), (epoch.as_str(), Some(true)));
    }
    let last = publishing.await.expect("publisher");
    let (rest, resets) = read_until(&mut client, last).await;
    assert!(resets.is_empty(), "{resets:?}");
    seen.extend(rest);
    assert_contiguous(&seen, start + 1, last);
}
