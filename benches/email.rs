//! Benchmark: `InboundEmail::parse` throughput (MB/s and messages/s) on a generated corpus of real-shaped forwards, beside `mail-parser` alone in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mail_parser::MessageParser;
use switchboard::email::InboundEmail;

const MESSAGES: usize = 1_000;

const PARAGRAPH: &str = "The import step keeps coming up: our HR export has a \
\"Personalnummer\" column and nobody knew it had to be mapped to the user id. \
We renew for two years if SSO is in the base plan.";

/// Five shapes, in rotation: Gmail inline forward (multipart/alternative, QP
/// text + HTML), Apple Mail quoted forward (plain QP), Outlook forward as
/// attachment (HTML only on top, `message/rfc822` with a base64 PDF), a
/// newsletter-style HTML-only mail, and a plain reply with RFC 2047 headers and
/// a long Cc list.
fn corpus() -> Vec<Vec<u8>> {
    let pdf = base64::engine::general_purpose::STANDARD.encode(
        (0..24_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect::<Vec<_>>(),
    );
    let pdf: String = pdf
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
        .collect();
    (0..MESSAGES)
        .map(|i| {
            let paras = 2 + i % 7;
            let text: String = (0..paras).map(|_| format!("{PARAGRAPH}\r\n\r\n")).collect();
            let html: String = (0..paras)
                .map(|_| format!("<p class=3D\"MsoNormal\">{PARAGRAPH}</p>\r\n"))
                .collect();
            let head = format!(
                "Received: from relay{i}.acme.example (relay.acme.example [192.0.2.{n}])\r\n\tby mx.in.example with ESMTPS id {i:08X}\r\n\tfor <tok{i}@in.example>; Tue, 4 Mar 2025 09:12:51 +0100\r\n\
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=acme.example; s=google;\r\n\th=mime-version:from:date:message-id:subject:to; bh=Xtsem7kQeJd2LdYkvd561Y0kG2cpZysDU1LfsdT4+1Q=;\r\n\tb=cSt/1/Ry7GKiEwR/QQvxVaD7zMKme4YTGNbSR7sQ8DW4J9B0vR7KUJ1dm51F7DC7iC1/yFA0Aytk4V3VBctAN\r\n\
From: Ada Lovelace <ada{n}@acme.example>\r\nTo: tok{i}@in.example\r\nDate: Tue, 4 Mar 2025 09:12:44 +0100\r\nMessage-ID: <m{i}@acme.example>\r\nMIME-Version: 1.0\r\n",
                n = i % 250
            );
            let body = match i % 5 {
                0 => format!(
                    "Subject: Fwd: Pricing question {i}\r\nContent-Type: multipart/alternative; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nFYI\r\n\r\n---------- Forwarded message ---------\r\nFrom: Bob Kahn <bob@acme.example>\r\nDate: Wed, Mar 5, 2025 at 11:40=E2=80=AFAM\r\nSubject: Pricing\r\nTo: Ada <ada@acme.example>\r\nCc: Carol Diaz <carol@contoso.example>\r\n\r\n{text}--b{i}\r\nContent-Type: text/html; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<div dir=3D\"ltr\">FYI<div class=3D\"gmail_quote\">{html}</div></div>\r\n--b{i}--\r\n"
                ),
                1 => format!(
                    "Subject: Fwd: Onboarding {i}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nWorth keeping =E2=80=94 see below.\r\n\r\n> Begin forwarded message:\r\n>=20\r\n> From: Frank <frank@northwind.example>\r\n> Subject: Onboarding\r\n> To: Ada <ada@acme.example>\r\n>=20\r\n{}",
                    text.lines().map(|l| format!("> {l}\r\n")).collect::<String>()
                ),
                2 => format!(
                    "Subject: FW: Renewal {i}\r\nContent-Type: multipart/mixed; boundary=\"o{i}\"\r\n\r\n--o{i}\r\nContent-Type: text/html; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><body>{html}</body></html>\r\n--o{i}\r\nContent-Type: message/rfc822\r\n\r\nFrom: Dan Buyer <dan@fabrikam.example>\r\nTo: Ada <ada@acme.example>\r\nCC: =?utf-8?B?Wm/DqyBLcmFtZXI=?= <zoe@fabrikam.example>\r\nSubject: Renewal\r\nDate: Wed, 5 Mar 2025 16:30:00 -0500\r\nContent-Type: multipart/mixed; boundary=\"i{i}\"\r\n\r\n--i{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}--i{i}\r\nContent-Type: application/pdf; name=\"notes.pdf\"\r\nContent-Disposition: attachment; filename=\"notes.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{pdf}--i{i}--\r\n--o{i}--\r\n"
                ),
                3 => format!(
                    "Subject: =?UTF-8?Q?Your_March_report_=E2=80=93_{i}?=\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><head><style>p{{margin:0}}</style></head><body><table><tr><td>{html}</td></tr></table></body></html>\r\n"
                ),
                _ => format!(
                    "Subject: =?ISO-8859-1?Q?Re:_R=E9union_{i}?=\r\nCc: {}\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n{text}",
                    (0..12)
                        .map(|k| format!("=?UTF-8?Q?P=C3=A9rson_{k}?= <p{k}@customer.example>"))
                        .collect::<Vec<_>>()
                        .join(",\r\n\t")
                ),
            };
            format!("{head}{body}").into_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let corpus = corpus();
    for m in &corpus {
        if let Err(e) = InboundEmail::parse(m) {
            panic!("the generated corpus must parse: {e}");
        }
    }
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    eprintln!(
        "corpus: {} messages, {:.1} MB, {:.1} KB on average",
        corpus.len(),
        bytes as f64 / 1e6,
        bytes as f64 / corpus.len() as f64 / 1e3
    );
    paired(&corpus, bytes);
    for (unit, throughput) in [
        ("bytes", Throughput::Bytes(bytes as u64)),
        ("messages", Throughput::Elements(corpus.len() as u64)),
    ] {
        let mut group = c.benchmark_group(format!("email_parse_{unit}"));
        group.throughput(throughput);
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(6));
        group.bench_function("mail_parser_alone", |b| {
            let parser = MessageParser::default();
            b.iter(|| {
                for m in &corpus {
                    black_box(parser.parse(black_box(m.as_slice())));
                }
            })
        });
        group.bench_function("InboundEmail::parse", |b| {
            b.iter(|| {
                for m in &corpus {
                    let _ = black_box(InboundEmail::parse(black_box(m.as_slice())));
                }
            })
        });
        group.finish();
    }
}

/// The ratio measured robustly on a shared machine: rounds alternate one pass
/// of `mail-parser` alone and one of `InboundEmail::parse` over the corpus, so
/// both see the same load; reports each side's best pass and the median of
/// the per-round ratios.
fn paired(corpus: &[Vec<u8>], bytes: usize) {
    const ROUNDS: usize = 40;
    let parser = MessageParser::default();
    let mut alone = Vec::with_capacity(ROUNDS);
    let mut ours = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for m in corpus {
            black_box(parser.parse(black_box(m.as_slice())));
        }
        alone.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for m in corpus {
            let _ = black_box(InboundEmail::parse(black_box(m.as_slice())));
        }
        ours.push(t.elapsed().as_secs_f64());
    }
    let mut ratios: Vec<f64> = alone.iter().zip(&ours).map(|(a, o)| a / o).collect();
    ratios.sort_by(f64::total_cmp);
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (a, o) = (best(&alone), best(&ours));
    let mib = bytes as f64 / (1024.0 * 1024.0);
    let n = corpus.len() as f64;
    eprintln!(
        "paired ({ROUNDS} alternating rounds): mail-parser alone {:.0} MiB/s, {:.1}k messages/s; \
InboundEmail::parse {:.0} MiB/s, {:.1}k messages/s; ratio of best passes {:.2}x, median round ratio {:.2}x",
        mib / a,
        n / a / 1e3,
        mib / o,
        n / o / 1e3,
        a / o,
        ratios[ROUNDS / 2]
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
