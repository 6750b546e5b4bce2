//! `AppPackage`: the Teams app package an admin uploads — `manifest.json` (schema v1.22) with the bot and the capture message action, plus 192×192 color and 32×32 outline PNG icons, zipped.

use serde_json::{Value, json};

use super::inbound::CAPTURE_COMMAND_ID;
use crate::inbound::hmac_sha256;
use crate::{Error, ErrorKind, Result};

/// The manifest schema version written.
pub const MANIFEST_VERSION: &str = "1.22";
/// The manifest's `$schema`.
pub const MANIFEST_SCHEMA: &str =
    "https://developer.microsoft.com/json-schemas/teams/v1.22/MicrosoftTeams.schema.json";
/// File names inside the package.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The color icon (192×192).
pub const COLOR_ICON_FILE: &str = "color.png";
/// The outline icon (32×32, white on transparent).
pub const OUTLINE_ICON_FILE: &str = "outline.png";

/// Builder of the `.zip` a Teams admin uploads (Teams admin center → Manage apps → Upload).
#[derive(Debug, Clone)]
#[must_use]
pub struct AppPackage {
    app_id: String,
    version: String,
    short_name: String,
    full_name: Option<String>,
    short_description: String,
    full_description: String,
    developer_name: String,
    website_url: String,
    privacy_url: String,
    terms_url: String,
    accent_color: String,
    valid_domains: Vec<String>,
    capture_title: String,
    color_icon: Option<Vec<u8>>,
    outline_icon: Option<Vec<u8>>,
}

fn check_len(what: &str, v: &str, max: usize) -> Result<()> {
    let n = v.chars().count();
    if n == 0 || n > max {
        return Err(Error::new(
            ErrorKind::Config,
            format!("the app manifest's {what} must be 1 to {max} characters"),
        ));
    }
    Ok(())
}

fn check_https(what: &str, v: &str) -> Result<()> {
    match url::Url::parse(v) {
        Ok(u) if u.scheme() == "https" => Ok(()),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!("the app manifest's {what} must be an https URL"),
        )),
    }
}

impl AppPackage {
    /// A package for bot `app_id` (also the app's id), named `short_name`,
    /// published by `developer_name` with its website, privacy and terms URLs.
    pub fn new(
        app_id: &str,
        short_name: &str,
        developer_name: &str,
        website_url: &str,
        privacy_url: &str,
        terms_url: &str,
    ) -> Self {
        AppPackage {
            app_id: app_id.trim().to_owned(),
            version: "1.0.0".to_owned(),
            short_name: short_name.trim().to_owned(),
            full_name: None,
            short_description: format!("{} notifications and capture", short_name.trim()),
            full_description: format!(
                "{} sends you notifications and lets you capture insights from messages.",
                short_name.trim()
            ),
            developer_name: developer_name.trim().to_owned(),
            website_url: website_url.trim().to_owned(),
            privacy_url: privacy_url.trim().to_owned(),
            terms_url: terms_url.trim().to_owned(),
            accent_color: "#4F52B2".to_owned(),
            valid_domains: Vec::new(),
            capture_title: "Capture insight".to_owned(),
            color_icon: None,
            outline_icon: None,
        }
    }
    /// The app version (`major.minor.patch`, default `1.0.0`).
    pub fn version(mut self, v: &str) -> Self {
        self.version = v.trim().to_owned();
        self
    }
    /// The full name (≤ 100 characters).
    pub fn full_name(mut self, v: &str) -> Self {
        self.full_name = Some(v.trim().to_owned());
        self
    }
    /// The descriptions (short ≤ 80, full ≤ 4,000 characters).
    pub fn description(mut self, short: &str, full: &str) -> Self {
        self.short_description = short.trim().to_owned();
        self.full_description = full.trim().to_owned();
        self
    }
    /// The accent color (`#RRGGBB`).
    pub fn accent_color(mut self, v: &str) -> Self {
        self.accent_color = v.trim().to_owned();
        self
    }
    /// A domain the app may open (e.g. the host's), without scheme.
    pub fn valid_domain(mut self, v: &str) -> Self {
        self.valid_domains.push(v.trim().to_owned());
        self
    }
    /// The message action's title (≤ 32 characters).
    pub fn capture_title(mut self, v: &str) -> Self {
        self.capture_title = v.trim().to_owned();
        self
    }
    /// The icons as PNG bytes (192×192 color, 32×32 outline); generated when not given.
    pub fn icons(mut self, color_png: Vec<u8>, outline_png: Vec<u8>) -> Self {
        self.color_icon = Some(color_png);
        self.outline_icon = Some(outline_png);
        self
    }

    /// The validated `manifest.json` value.
    pub fn manifest(&self) -> Result<Value> {
        check_len("app id", &self.app_id, 64)?;
        check_len("name.short", &self.short_name, 30)?;
        if let Some(f) = &self.full_name {
            check_len("name.full", f, 100)?;
        }
        check_len("description.short", &self.short_description, 80)?;
        check_len("description.full", &self.full_description, 4_000)?;
        check_len("developer.name", &self.developer_name, 32)?;
        check_len("capture command title", &self.capture_title, 32)?;
        check_https("developer.websiteUrl", &self.website_url)?;
        check_https("developer.privacyUrl", &self.privacy_url)?;
        check_https("developer.termsOfUseUrl", &self.terms_url)?;
        let parts: Vec<&str> = self.version.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::new(
                ErrorKind::Config,
                "the app version must be major.minor.patch",
            ));
        }
        let c = self.accent_color.as_bytes();
        if c.len() != 7 || c[0] != b'#' || !c[1..].iter().all(u8::is_ascii_hexdigit) {
            return Err(Error::new(
                ErrorKind::Config,
                "the accent color must be #RRGGBB",
            ));
        }
        let mut name = json!({ "short": self.short_name });
        if let Some(f) = &self.full_name {
            name["full"] = json!(f);
        }
        Ok(json!({
            "$schema": MANIFEST_SCHEMA,
            "manifestVersion": MANIFEST_VERSION,
            "version": self.version,
            "id": self.app_id,
            "developer": {
                "name": self.developer_name,
                "websiteUrl": self.website_url,
                "privacyUrl": self.privacy_url,
                "termsOfUseUrl": self.terms_url,
            },
            "name": name,
            "description": { "short": self.short_description, "full": self.full_description },
            "icons": { "color": COLOR_ICON_FILE, "outline": OUTLINE_ICON_FILE },
            "accentColor": self.accent_color,
            "bots": [{
                "botId": self.app_id,
                "scopes": ["personal", "team", "groupChat"],
                "supportsFiles": false,
                "isNotificationOnly": false,
            }],
            "composeExtensions": [{
                "botId": self.app_id,
                "commands": [{
                    "id": CAPTURE_COMMAND_ID,
                    "type": "action",
                    "title": self.capture_title,
                    "description": "Capture this message as an insight",
                    "context": ["message"],
                    "fetchTask": true,
                }],
            }],
            "permissions": ["identity", "messageTeamMembers"],
            "validDomains": self.valid_domains,
        }))
    }

    /// The `.zip`: `manifest.json`, `color.png` and `outline.png` at its root.
    pub fn build(&self) -> Result<Vec<u8>> {
        let manifest = serde_json::to_vec_pretty(&self.manifest()?)?;
        let seed = hmac_sha256(b"switchboard-teams-icon", &[self.app_id.as_bytes()]);
        let accent = parse_color(&self.accent_color).unwrap_or([0x4F, 0x52, 0xB2]);
        let color = match &self.color_icon {
            Some(c) => c.clone(),
            None => icon_png(192, accent, [255, 255, 255], &seed, false),
        };
        let outline = match &self.outline_icon {
            Some(c) => c.clone(),
            None => icon_png(32, [0, 0, 0], [255, 255, 255], &seed, true),
        };
        Ok(zip_stored(&[
            (MANIFEST_FILE, &manifest),
            (COLOR_ICON_FILE, &color),
            (OUTLINE_ICON_FILE, &outline),
        ]))
    }
}

fn parse_color(c: &str) -> Option<[u8; 3]> {
    let h = c.strip_prefix('#')?;
    let v = u32::from_str_radix(h, 16).ok()?;
    Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

/// A square RGBA icon: a 5×5 symmetric pattern derived from `seed` in `fg` on
/// `bg` (or on transparent for outline icons, as Teams requires).
fn icon_png(size: u32, bg: [u8; 3], fg: [u8; 3], seed: &[u8; 32], outline: bool) -> Vec<u8> {
    let cell = size / 7;
    let mut raw = Vec::with_capacity(((size * 4 + 1) * size) as usize);
    for y in 0..size {
        raw.push(0); // filter: none
        for x in 0..size {
            let (cx, cy) = (x / cell.max(1), y / cell.max(1));
            let on = (1..6).contains(&cx) && (1..6).contains(&cy) && {
                let col = if cx > 3 { 6 - cx } else { cx } - 1;
                let bit = (cy - 1) * 3 + col;
                seed[(bit / 8) as usize] >> (bit % 8) & 1 == 1
            };
            let px = match (on, outline) {
                (true, _) => [fg[0], fg[1], fg[2], 255],
                (false, true) => [0, 0, 0, 0],
                (false, false) => [bg[0], bg[1], bg[2], 255],
            };
            raw.extend_from_slice(&px);
        }
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(b) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = b.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// CRC-32 (IEEE), as PNG and ZIP use it.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A ZIP archive of `files`, stored (no compression), no directories.
fn zip_stored(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        let name_len = name.len() as u16;
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]); // version, flags, stored, time 0, date 1980-01-01
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // Central directory entry.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, internal attrs, external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let cd_size = central.len() as u32;
    out.extend_from_slice(&central);
    let n = files.len() as u16;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let p = AppPackage::new(
            "id",
            "Perks",
            "Acme",
            "https://a.example",
            "https://a.example/p",
            "https://a.example/t",
        );
        assert!(p.manifest().is_ok());
        assert!(p.clone().version("1.0").manifest().is_err());
        assert!(p.clone().accent_color("blue").manifest().is_err());
        assert!(
            AppPackage::new(
                "id",
                &"x".repeat(31),
                "Acme",
                "https://a",
                "https://a",
                "https://a"
            )
            .manifest()
            .is_err()
        );
        assert!(
            AppPackage::new("id", "Perks", "Acme", "http://a", "https://a", "https://a")
                .manifest()
                .is_err()
        );
    }
}
