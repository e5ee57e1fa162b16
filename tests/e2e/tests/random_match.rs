//! Random 1:1 matching on /random: four strangers form two pairs, and Next re-pairs them.

use anyhow::{Result, ensure};
use serde_json::json;
use std::collections::BTreeMap;
use switchboard_e2e::{Browser, BrowserKind, MIN_FRAMES, TestServer, video_of};

/// Waits until `page` plays exactly one remote video, past [`MIN_FRAMES`] frames, and
/// returns the partner's name.
async fn partner_of(page: &Browser) -> Result<String> {
    let name = page
        .wait_until(
            &format!("{} to play exactly one partner's video", page.label()),
            "const videos = Array.from(document.querySelectorAll('video[data-peer-id]'));
             if (videos.length !== 1) return null;
             const v = videos[0];
             const frames = Math.max(v.getVideoPlaybackQuality().totalVideoFrames, v.mozPaintedFrames || 0);
             return frames > arguments[0] ? (v.dataset.name || null) : null;",
            vec![json!(MIN_FRAMES)],
        )
        .await?;
    Ok(name.as_str().unwrap_or_default().to_string())
}

/// Reads everyone's partner and checks the pairing: mutual, nobody with themselves,
/// everyone in exactly one pair.
async fn pairing(pages: &[Browser]) -> Result<BTreeMap<String, String>> {
    let mut partners = BTreeMap::new();
    for page in pages {
        partners.insert(page.label().to_string(), partner_of(page).await?);
    }
    for (me, partner) in &partners {
        ensure!(
            me != partner,
            "{me} is matched with themselves: {partners:?}"
        );
        ensure!(
            partners.get(partner) == Some(me),
            "{me} sees {partner}, but {partner} does not see {me}: {partners:?}"
        );
    }
    Ok(partners)
}

fn page<'a>(pages: &'a [Browser], name: &str) -> &'a Browser {
    pages
        .iter()
        .find(|p| p.label() == name)
        .expect("a page with that name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn four_strangers_pair_up_and_next_re_pairs_them() -> Result<()> {
    let server = TestServer::start().await?;
    let names = ["rita", "sam", "tess", "uma"];
    let specs: Vec<(BrowserKind, &str)> =
        names.iter().map(|n| (BrowserKind::Chromium, *n)).collect();
    let pages = Browser::launch_all(&specs).await?;
    for (page, name) in pages.iter().zip(names) {
        page.goto(&server.url(&format!("/random?name={name}&autojoin=1")))
            .await?;
    }

    let first = pairing(&pages).await?;
    println!("first pairing: {first:?}");

    // rita presses Next: she and her partner are both back in the lobby. Ex-partners are
    // not put straight back together and the other pair is busy, so both wait.
    let a = "rita".to_string();
    let b = first[&a].clone();
    let (c, d) = {
        let rest: Vec<&String> = first.keys().filter(|n| **n != a && **n != b).collect();
        (rest[0].clone(), rest[1].clone())
    };
    page(&pages, &a).click("#next").await?;
    for (me, old) in [(&a, &b), (&b, &a)] {
        page(&pages, me)
            .wait_until(
                &format!("{me} to stop showing {old}"),
                "return document.querySelector(arguments[0]) === null;",
                vec![json!(video_of(old))],
            )
            .await?;
    }
    // The other pair is not disturbed.
    for (me, other) in [(&c, &d), (&d, &c)] {
        let p = page(&pages, me);
        let now = p.wait_frames(&video_of(other), 0).await?;
        p.wait_frames(&video_of(other), now + 10).await?;
    }
    // Nobody is shown a partner while waiting.
    for me in [&a, &b] {
        let videos = page(&pages, me).remote_videos().await?;
        ensure!(videos.is_empty(), "{me} is waiting but shows {videos:?}");
    }

    // tess's pair presses Next too: now all four are free and must form two new pairs.
    page(&pages, &c).click("#next").await?;
    let second = pairing(&pages).await?;
    println!("second pairing: {second:?}");
    for (me, partner) in &second {
        ensure!(
            first[me] != *partner,
            "{me} was matched again with their previous partner {partner}: {second:?}"
        );
    }
    server.shutdown().await;
    Ok(())
}
