//! Chat messages and file transfer over the room's data channels.

use anyhow::{Result, ensure};
use serde_json::json;
use switchboard_e2e::{
    Browser, BrowserKind, MIN_FRAMES, TestServer, camera_of, fetched_fnv1a, fnv1a, join_room,
};

/// Waits until `reader`'s chat log shows `text` from `from`.
async fn wait_for_chat(reader: &Browser, from: &str, text: &str) -> Result<()> {
    reader
        .wait_until(
            &format!("chat message {text:?} from {from}"),
            "return Array.from(document.querySelectorAll('#chat-log li'))
                 .some((li) => li.dataset.from === arguments[0] && li.textContent.includes(arguments[1]));",
            vec![json!(from), json!(text)],
        )
        .await
        .map(drop)
}

async fn send_chat(sender: &Browser, text: &str) -> Result<()> {
    sender.type_into("#chat-input", text).await?;
    sender.click("#chat-send").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn chat_messages_reach_the_other_page_with_the_senders_name() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ann"),
        (BrowserKind::Chromium, "ben"),
    ])
    .await?;
    let (ann, ben) = (&browsers[0], &browsers[1]);
    join_room(&server, "chatty", &[(ann, "ann"), (ben, "ben")]).await?;
    // Like a person, talk once the other one is on screen.
    ann.wait_frames(&camera_of("ben"), 0).await?;
    ben.wait_frames(&camera_of("ann"), 0).await?;

    send_chat(ann, "Hello Ben, can you hear me?").await?;
    wait_for_chat(ben, "ann", "Hello Ben, can you hear me?").await?;
    send_chat(ben, "Loud and clear — ünïcödé too ✓").await?;
    wait_for_chat(ann, "ben", "Loud and clear — ünïcödé too ✓").await?;

    // The input is cleared after sending, and a message is not echoed back as the other's.
    let input = ann
        .js(
            "return document.querySelector('#chat-input').value;",
            vec![],
        )
        .await?;
    ensure!(input == "", "ann's chat input still holds {input}");
    let misattributed = ann
        .js(
            "return Array.from(document.querySelectorAll('#chat-log li'))
                 .filter((li) => li.dataset.from === 'ben' && li.textContent.includes('Hello Ben')).length;",
            vec![],
        )
        .await?;
    ensure!(misattributed == 0, "ann's own message is shown as ben's");
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_file_sent_from_one_page_is_listed_on_the_other_with_its_size() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ann"),
        // Chromium to Firefox: their SCTP stacks differ (e.g. in max-message-size).
        (BrowserKind::Firefox, "ben"),
    ])
    .await?;
    let (ann, ben) = (&browsers[0], &browsers[1]);
    join_room(&server, "files", &[(ann, "ann"), (ben, "ben")]).await?;
    ann.wait_frames(&camera_of("ben"), MIN_FRAMES).await?;
    ben.wait_frames(&camera_of("ann"), MIN_FRAMES).await?;

    // Big enough to need many data-channel messages, odd-sized to catch off-by-one chunks.
    let content: Vec<u8> = (0..300_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = ann.scratch_dir().join("quarterly-report.bin");
    std::fs::write(&path, &content)?;
    ann.type_into("#file-input", &path.to_string_lossy())
        .await?;

    let entry = ben
        .wait_until(
            "quarterly-report.bin in #files",
            "const li = Array.from(document.querySelectorAll('#files li'))
                 .find((li) => li.textContent.includes('quarterly-report.bin'));
             if (!li) return null;
             const link = li.querySelector('a[href]');
             return {
               text: li.textContent.trim(),
               size: link?.dataset.size ?? null,
               from: link?.dataset.from ?? null,
               download: link?.download ?? null,
               href: link?.href ?? null,
             };",
            vec![],
        )
        .await?;
    println!("ben lists: {entry}");
    ensure!(
        entry["size"].as_str() == Some(content.len().to_string().as_str()),
        "ben's entry does not carry the size {}: {entry}",
        content.len()
    );
    ensure!(
        entry["from"] == "ann",
        "ben's entry is not from ann: {entry}"
    );
    ensure!(
        entry["download"] == "quarterly-report.bin",
        "ben's entry does not download under the file's name: {entry}"
    );
    // What a person reads: the rounded size and the sender (300001 bytes = 293 KB).
    let text = entry["text"].as_str().unwrap_or_default();
    ensure!(
        text.contains("293 KB") && text.contains("ann"),
        "ben's entry does not show \"293 KB\" from ann: {text:?}"
    );

    // The offered file holds exactly the bytes that were sent.
    let Some(href) = entry["href"].as_str() else {
        anyhow::bail!("ben's entry has no link to the file: {entry}");
    };
    let (len, hash) = fetched_fnv1a(ben, href).await?;
    ensure!(
        len == content.len() as u64 && hash == fnv1a(&content),
        "ben received different bytes: len {len} hash {hash}, expected len {} hash {}",
        content.len(),
        fnv1a(&content)
    );
    server.shutdown().await;
    Ok(())
}
