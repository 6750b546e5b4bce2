//! Admin console in headless Chromium over WebDriver (Debian's `chromium` and `chromium-driver`): map an unmatched person by hand, replay a dead letter, switch an event rule off, assert what the pages show, and save a screenshot. Skipped (and says so) without chromium.

mod admin_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use switchboard::MemoryStore;

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Kills the chromedriver this test started when the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_driver(driver: &Path) -> (Driver, u16) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let guard = Driver(child);
    let status = format!("http://127.0.0.1:{port}/status");
    for _ in 0..100 {
        if reqwest::get(&status)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (guard, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not come up on port {port}");
}

async fn browser(port: u16, chromium: &Path, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium() {
    let (Some(chromium), Some(driver)) = (
        find(&["chromium", "chromium-browser"]),
        find(&["chromedriver"]),
    ) else {
        println!(
            "admin_browser SKIPPED: chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)"
        );
        return;
    };
    let h = admin_common::start(MemoryStore::new().with_keyring(admin_common::keyring())).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let (_driver, port) = start_driver(&driver).await;
    let c = browser(port, &chromium, profile.path()).await;

    // The host's session is a cookie here; without it the console says 401.
    c.goto(&h.url("/acme/")).await.expect("open");
    assert!(c.source().await.expect("source").contains("Unauthorized"));
    c.execute("document.cookie = 'demo_tenant=acme; path=/';", Vec::new())
        .await
        .expect("cookie");
    c.goto(&h.url("/acme/")).await.expect("open");
    assert_eq!(text_of(&c, "#dead-letters").await, "3");

    // Map the unmatched person by hand.
    c.goto(&h.url("/acme/mapping")).await.expect("mapping");
    let row = "tr.person[data-user=\"acme-bob\"]";
    c.find(Locator::Css(&format!("{row} input[name=platform_id]")))
        .await
        .expect("input")
        .send_keys("UACME3")
        .await
        .expect("type");
    c.find(Locator::Css(&format!("{row} button")))
        .await
        .expect("map")
        .click()
        .await
        .expect("click");
    assert_eq!(text_of(&c, ".notice").await, "The person was mapped.");
    assert_eq!(
        text_of(&c, "table.manual tr.link[data-user=\"acme-bob\"] code").await,
        "UACME3"
    );
    assert!(
        c.find(Locator::Css(row)).await.is_err(),
        "no longer unmatched"
    );

    // Replay a dead letter.
    c.goto(&h.url("/acme/dead-letters"))
        .await
        .expect("dead letters");
    c.find(Locator::Css("tr.dead-letter form.replay button"))
        .await
        .expect("replay")
        .click()
        .await
        .expect("click");
    assert_eq!(
        text_of(&c, ".notice").await,
        "The delivery was queued again."
    );
    let rows = c
        .find_all(Locator::Css("tr.dead-letter"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2);

    // Switch an event rule off.
    c.goto(&h.url("/acme/rules")).await.expect("rules");
    c.find(Locator::Css("#rule-wallet-updates form.toggle button"))
        .await
        .expect("toggle")
        .click()
        .await
        .expect("click");
    assert_eq!(text_of(&c, ".notice").await, "The event rule was saved.");
    assert_eq!(text_of(&c, "#rule-wallet-updates .state").await, "off");
    assert_eq!(text_of(&c, "#rule-perk-news .state").await, "on");
    let page = c.source().await.expect("source");
    assert!(!page.to_lowercase().contains("globex"));

    let shot = c.screenshot().await.expect("screenshot");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin_browser");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let file = dir.join("rules.png");
    std::fs::write(&file, &shot).expect("write screenshot");
    assert!(shot.starts_with(b"\x89PNG"));
    println!("screenshot: {}", file.display());
    c.close().await.expect("close");

    // What the browser did is what the store holds.
    let rules =
        h.sb.rules(&switchboard::TenantId::new("acme").expect("t"))
            .await
            .expect("rules");
    assert_eq!(rules[0].enabled, Some(false));
}
