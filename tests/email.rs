//! `InboundEmail::parse` tests: RFC 5322 Appendix A messages, RFC 2047 encoded words, real-shaped forwards from Gmail, Outlook and Apple Mail with attachments, malformed input, and property tests.

use proptest::prelude::*;
use switchboard::ErrorKind;
use switchboard::email::InboundEmail;

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

// RFC 5322 A.1.1: a message from one person to another with simple addressing.
const A_1_1: &str = "From: John Doe <jdoe@machine.example>
To: Mary Smith <mary@example.net>
Subject: Saying Hello
Date: Fri, 21 Nov 1997 09:55:06 -0600
Message-ID: <1234@local.machine.example>

This is a message just to say hello.
So, \"Hello\".
";

// RFC 5322 A.1.2: different types of mailboxes.
const A_1_2: &str = "From: \"Joe Q. Public\" <john.q.public@example.com>
To: Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>
Cc: <boss@nil.test>, \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>
Date: Tue, 1 Jul 2003 10:52:37 +0200
Message-ID: <5678.21-Nov-1997@example.com>

Hi everyone.
";

// RFC 5322 A.1.3: group addresses.
const A_1_3: &str = "From: Pete <pete@silly.example>
To: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;
Cc: Undisclosed recipients:;
Date: Thu, 13 Feb 1969 23:32:54 -0330
Message-ID: <testabcd.1234@silly.example>

Testing.
";

// RFC 5322 A.5: white space, comments, and other oddities.
const A_5: &str = "From: Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>
To:A Group(Some people)
     :Chris Jones <c@(Chris's host.)public.example>,
         joe@example.org,
  John <jdoe@one.test> (my dear friend); (the end of the group)
Cc:(Empty list)(start)Hidden recipients  :(nobody(that I know))  ;
Date: Thu,
      13
        Feb
          1969
      23:32
               -0330 (Newfoundland Time)
Message-ID:              <testabcd.1234@silly.test>

Testing.
";

#[test]
fn rfc5322_a_1_1_simple_addressing() {
    let m = InboundEmail::parse(&crlf(A_1_1)).unwrap();
    assert_eq!(m.message_id.as_deref(), Some("1234@local.machine.example"));
    assert_eq!(m.subject.as_deref(), Some("Saying Hello"));
    let from = m.from.as_ref().unwrap();
    assert_eq!(from.email, "jdoe@machine.example");
    assert_eq!(from.name.as_deref(), Some("John Doe"));
    assert_eq!(m.to.len(), 1);
    assert_eq!(m.to[0].email, "mary@example.net");
    assert!(m.cc.is_empty());
    assert_eq!(m.date.as_deref(), Some("1997-11-21T09:55:06-06:00"));
    assert_eq!(
        m.text,
        "This is a message just to say hello.\nSo, \"Hello\".\n"
    );
    assert_eq!(m.attachments_ignored, 0);
    let json = serde_json::to_value(&m).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "attachments_ignored",
            "cc",
            "date",
            "from",
            "message_id",
            "subject",
            "text",
            "to"
        ]
    );
    assert_eq!(json["from"]["email"], "jdoe@machine.example");
}

#[test]
fn rfc5322_a_1_2_mailbox_forms() {
    let m = InboundEmail::parse(&crlf(A_1_2)).unwrap();
    assert_eq!(
        m.from.as_ref().unwrap().name.as_deref(),
        Some("Joe Q. Public")
    );
    let to: Vec<&str> = m.to.iter().map(|a| a.email.as_str()).collect();
    assert_eq!(to, ["mary@x.test", "jdoe@example.org", "one@y.test"]);
    let cc: Vec<&str> = m.cc.iter().map(|a| a.email.as_str()).collect();
    assert_eq!(cc, ["boss@nil.test", "sysservices@example.net"]);
    assert_eq!(m.cc[1].name.as_deref(), Some("Giant; \"Big\" Box"));
    assert_eq!(m.date.as_deref(), Some("2003-07-01T10:52:37+02:00"));
}

#[test]
fn rfc5322_a_1_3_groups_are_flattened() {
    let m = InboundEmail::parse(&crlf(A_1_3)).unwrap();
    let to: Vec<&str> = m.to.iter().map(|a| a.email.as_str()).collect();
    assert_eq!(to, ["c@a.test", "joe@where.test", "jdoe@one.test"]);
    assert!(m.cc.is_empty());
    assert_eq!(m.date.as_deref(), Some("1969-02-13T23:32:54-03:30"));
}

#[test]
fn rfc5322_a_5_comments_and_folding() {
    let m = InboundEmail::parse(&crlf(A_5)).unwrap();
    assert_eq!(m.from.as_ref().unwrap().email, "pete@silly.test");
    let to: Vec<&str> = m.to.iter().map(|a| a.email.as_str()).collect();
    assert!(to.contains(&"joe@example.org"), "{to:?}");
    assert!(to.contains(&"jdoe@one.test"), "{to:?}");
    assert!(m.cc.is_empty());
    assert_eq!(m.message_id.as_deref(), Some("testabcd.1234@silly.test"));
    assert_eq!(m.date.as_deref(), Some("1969-02-13T23:32:00-03:30"));
}

#[test]
fn rfc2047_encoded_words() {
    // RFC 2047 section 8 examples.
    let raw = "From: =?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>
To: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>
CC: =?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>
Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=
    =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=
Date: Mon, 3 Mar 2025 10:00:00 +0000

body
";
    let m = InboundEmail::parse(&crlf(raw)).unwrap();
    assert_eq!(
        m.from.as_ref().unwrap().name.as_deref(),
        Some("Keith Moore")
    );
    assert_eq!(m.to[0].name.as_deref(), Some("Keld Jørn Simonsen"));
    assert_eq!(m.cc[0].name.as_deref(), Some("André Pirard"));
    assert_eq!(m.cc[0].email, "pirard@vm1.ulg.ac.be");
    assert_eq!(
        m.subject.as_deref(),
        Some("If you can read this you understand the example.")
    );
}

const GMAIL_FORWARD: &str = "MIME-Version: 1.0
From: Ada Lovelace <ada@acme.test>
Date: Tue, 4 Mar 2025 09:12:44 +0100
Message-ID: <CAF=abc123@mail.gmail.com>
Subject: Fwd: Pricing feedback
To: inbox+tok@in.switchboard.test
Content-Type: multipart/mixed; boundary=\"000000000000mixed\"

--000000000000mixed
Content-Type: multipart/alternative; boundary=\"000000000000alt\"

--000000000000alt
Content-Type: text/plain; charset=\"UTF-8\"
Content-Transfer-Encoding: quoted-printable

Worth a look.

---------- Forwarded message ---------
From: Bob Customer <bob@customer.test>
Date: Mon, Mar 3, 2025 at 5:01 PM
Subject: Pricing feedback
To: <ada@acme.test>
Cc: Carol <carol@customer.test>

The new plan is too expensive for teams under 10 =E2=80=94 we'd pay for a s=
maller tier.

--000000000000alt
Content-Type: text/html; charset=\"UTF-8\"

<div dir=\"ltr\">Worth a look.<br><br><div class=\"gmail_quote\">---------- Forwarded message ---------</div></div>

--000000000000alt--
--000000000000mixed
Content-Type: application/pdf; name=\"quote.pdf\"
Content-Disposition: attachment; filename=\"quote.pdf\"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K
--000000000000mixed--
";

#[test]
fn gmail_inline_forward_keeps_the_thread_and_counts_the_attachment() {
    let m = InboundEmail::parse(&crlf(GMAIL_FORWARD)).unwrap();
    assert_eq!(m.subject.as_deref(), Some("Fwd: Pricing feedback"));
    assert!(m.text.starts_with("Worth a look.\n"), "{}", m.text);
    assert!(m.text.contains("From: Bob Customer <bob@customer.test>"));
    assert!(
        m.text
            .contains("teams under 10 — we'd pay for a smaller tier.")
    );
    assert!(!m.text.contains("<div"), "the plain alternative is used");
    assert_eq!(m.attachments_ignored, 1);
    assert!(!m.text.contains("JVBER"));
}

const OUTLOOK_FORWARD_AS_ATTACHMENT: &str = "From: Ada Lovelace <Ada@Acme.test>
To: \"Insights\" <tok@in.switchboard.test>
Subject: FW: Renewal
Date: Wed, 5 Mar 2025 08:00:00 +0000
Message-ID: <DB9PR01MB0001@eurprd01.prod.outlook.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"_004_outer_\"

--_004_outer_
Content-Type: text/html; charset=\"us-ascii\"

<html><body><p>See below &amp; attached.</p></body></html>

--_004_outer_
Content-Type: message/rfc822
Content-Disposition: attachment

From: Dan Buyer <dan@buyer.test>
To: Ada Lovelace <ada@acme.test>
Cc: =?utf-8?Q?Zo=C3=AB?= <zoe@buyer.test>
Subject: Renewal
Date: Tue, 4 Mar 2025 16:30:00 -0500
Message-ID: <renewal-1@buyer.test>
Content-Type: multipart/mixed; boundary=\"inner\"

--inner
Content-Type: text/plain

We will renew if SSO is included.

--inner
Content-Type: image/png
Content-Disposition: attachment; filename=\"logo.png\"
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--inner--

--_004_outer_--
";

#[test]
fn outlook_forward_as_attachment_is_followed() {
    let m = InboundEmail::parse(&crlf(OUTLOOK_FORWARD_AS_ATTACHMENT)).unwrap();
    assert_eq!(m.from.as_ref().unwrap().email, "ada@acme.test");
    // The HTML-only top part is converted to text.
    assert!(m.text.contains("See below & attached."), "{}", m.text);
    assert!(
        m.text.contains("From: Dan Buyer <dan@buyer.test>"),
        "{}",
        m.text
    );
    assert!(m.text.contains("We will renew if SSO is included."));
    assert_eq!(m.attachments_ignored, 1, "the logo inside the forward");
    assert_eq!(m.forwarded.len(), 1);
    assert_eq!(m.forwarded[0].cc[0].name.as_deref(), Some("Zoë"));
    assert_eq!(
        m.forwarded[0].date.as_deref(),
        Some("2025-03-04T16:30:00-05:00")
    );
    let people: Vec<String> = m.participants().into_iter().map(|a| a.email).collect();
    assert_eq!(
        people,
        [
            "ada@acme.test",
            "tok@in.switchboard.test",
            "dan@buyer.test",
            "zoe@buyer.test"
        ]
    );
}

const APPLE_MAIL_FORWARD: &str = "From: Ada Lovelace <ada@acme.test>
Content-Type: multipart/alternative; boundary=\"Apple-Mail=_1\"
Mime-Version: 1.0 (Mac OS X Mail 16.0)
Subject: Fwd: Onboarding
Date: Thu, 6 Mar 2025 12:00:00 +0100
Cc: tok@in.switchboard.test
To: Eve <eve@acme.test>
Message-Id: <A1B2C3@acme.test>

--Apple-Mail=_1
Content-Transfer-Encoding: quoted-printable
Content-Type: text/plain; charset=utf-8

FYI

Begin forwarded message:

From: Frank <frank@client.test>
Subject: Onboarding
Date: 5 March 2025 at 18:00:00 CET
To: Ada Lovelace <ada@acme.test>

Onboarding took us three weeks; the import step was the slowest.

--Apple-Mail=_1
Content-Transfer-Encoding: 7bit
Content-Type: text/html; charset=utf-8

<html><body>FYI<br><blockquote>Begin forwarded message:</blockquote></body></html>
--Apple-Mail=_1--
";

#[test]
fn apple_mail_forward_in_cc() {
    let m = InboundEmail::parse(&crlf(APPLE_MAIL_FORWARD)).unwrap();
    assert_eq!(m.cc[0].email, "tok@in.switchboard.test");
    assert_eq!(m.message_id.as_deref(), Some("A1B2C3@acme.test"));
    assert!(m.text.contains("Begin forwarded message:"));
    assert!(m.text.contains("the import step was the slowest."));
    assert_eq!(m.attachments_ignored, 0);
    // The inline "Begin forwarded message:" block names the forwarded people.
    assert_eq!(m.forwarded.len(), 1);
    assert_eq!(m.forwarded[0].subject.as_deref(), Some("Onboarding"));
    let people: Vec<String> = m.participants().into_iter().map(|a| a.email).collect();
    assert_eq!(
        people,
        [
            "ada@acme.test",
            "eve@acme.test",
            "tok@in.switchboard.test",
            "frank@client.test"
        ]
    );
}

#[test]
fn gmail_and_outlook_inline_forward_blocks_name_their_people() {
    let raw = "From: ada@acme.test\r\nTo: tok@in.switchboard.test\r\nSubject: Fwd: x\r\n\r\n\
FYI\r\n\r\n---------- Forwarded message ---------\r\nFrom: Bob Kahn <bob@acme.test>\r\n\
Date: Mon, Mar 3, 2025 at 4:02\u{202f}PM\r\nSubject: Pricing\r\nTo: <ada@acme.test>\r\n\
Cc: Carol <carol@customer.test>\r\n\r\nhello\r\n\r\n________________________________\r\n\
From: Dan <dan@buyer.test>\r\nSent: Monday, March 3, 2025 9:00 AM\r\nTo: Bob Kahn <bob@acme.test>\r\n\
Subject: RE: Pricing\r\n\r\nquoted\r\n";
    let m = InboundEmail::parse(raw.as_bytes()).unwrap();
    assert_eq!(m.forwarded.len(), 2, "{:?}", m.forwarded);
    assert_eq!(m.forwarded[1].subject.as_deref(), Some("RE: Pricing"));
    let people: Vec<String> = m.participants().into_iter().map(|a| a.email).collect();
    assert_eq!(
        people,
        [
            "ada@acme.test",
            "tok@in.switchboard.test",
            "bob@acme.test",
            "carol@customer.test",
            "dan@buyer.test"
        ]
    );
}

#[test]
fn invalid_addresses_and_dates_are_dropped_not_guessed() {
    let raw = "From: ok <ok@example.com>
To: not-an-address, <good@example.com>
Date: Thu, 31 Feb 2025 99:99:99 +0000

x
";
    let m = InboundEmail::parse(&crlf(raw)).unwrap();
    let to: Vec<&str> = m.to.iter().map(|a| a.email.as_str()).collect();
    assert_eq!(to, ["good@example.com"]);
    assert_eq!(m.date, None);
}

#[test]
fn malformed_input_is_a_typed_error() {
    for raw in [
        &b""[..],
        b"   \r\n",
        b"just some text without headers",
        b"\xff\xfe\x00\x01",
    ] {
        let err = InboundEmail::parse(raw).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{raw:?}");
    }
    let no_from = crlf("To: a@example.com\nSubject: hi\n\nbody\n");
    assert_eq!(
        InboundEmail::parse(&no_from).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let huge = vec![b'a'; switchboard::email::MAX_MESSAGE_BYTES + 1];
    assert_eq!(
        InboundEmail::parse(&huge).unwrap_err().kind(),
        ErrorKind::PayloadTooLarge
    );
}

fn header_text() -> impl Strategy<Value = String> {
    "[ -~]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = InboundEmail::parse(&raw);
    }

    #[test]
    fn never_panics_on_header_like_input(
        lines in proptest::collection::vec(
            prop_oneof![
                "(From|To|Cc|Subject|Date|Message-ID|Content-Type): [ -~]{0,60}",
                "[ \t][ -~]{0,30}",
                "--[a-z]{0,8}",
                "Content-Type: multipart/(mixed|alternative); boundary=[a-z]{1,4}",
                "=\\?[A-Za-z0-9-]{0,10}\\?[QqBb]\\?[ -~]{0,20}\\?=",
            ],
            0..30,
        )
    ) {
        let raw = lines.join("\r\n");
        let _ = InboundEmail::parse(raw.as_bytes());
    }

    #[test]
    fn simple_messages_round_trip(
        local in "[a-z][a-z0-9]{0,10}",
        domain in "[a-z]{1,10}\\.(com|test|org)",
        name in "[A-Za-z][A-Za-z ]{0,20}[A-Za-z]",
        subject in header_text(),
        body in "[ -~\n]{0,200}",
    ) {
        let raw = format!(
            "From: {name} <{local}@{}>\r\nTo: <x@{domain}>\r\nSubject: {subject}\r\n\r\n{body}",
            domain.to_uppercase()
        );
        let m = InboundEmail::parse(raw.as_bytes()).unwrap();
        let from = m.from.clone().unwrap();
        prop_assert_eq!(from.email, format!("{local}@{domain}"));
        let expect_name = name.split_whitespace().collect::<Vec<_>>().join(" ");
        prop_assert_eq!(from.name, Some(expect_name));
        prop_assert_eq!(m.to.len(), 1);
        let expect_subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        prop_assert_eq!(m.subject.unwrap_or_default(), expect_subject);
        prop_assert_eq!(m.text.trim_end(), body.trim_end());
        prop_assert_eq!(m.attachments_ignored, 0);
    }

    #[test]
    fn every_parsed_address_is_normalised(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut msg = b"From: a@b.test\r\nTo: ".to_vec();
        msg.extend_from_slice(&raw);
        msg.extend_from_slice(b"\r\n\r\nbody");
        if let Ok(m) = InboundEmail::parse(&msg) {
            for a in m.from.iter().chain(&m.to).chain(&m.cc) {
                let normalised = switchboard::identity::normalize_email(&a.email);
                prop_assert_eq!(normalised, Some(a.email.clone()));
            }
        }
    }
}
