//! Shared by the CSV benches: a streaming generator of the 1,000,000-row, 12-column export and the peak-RSS probe.

use std::io::Read;

/// Produces a 12-column CSV export row by row.
pub struct Generator {
    rows: usize,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl Generator {
    pub fn new(rows: usize) -> Self {
        let header =
            b"Email,Name,Plan,Seats,Country,Signup,Tickets,MRR,Active,Company,Notes,City\r\n";
        Generator {
            rows,
            next: 0,
            buf: header.to_vec(),
            pos: 0,
        }
    }

    fn fill(&mut self) {
        use std::io::Write as _;
        self.buf.clear();
        self.pos = 0;
        let plans = ["Basic", "Pro", "Premium", "Enterprise"];
        let countries = ["DE", "AT", "US", "GB", "FR", "NL"];
        while self.next < self.rows && self.buf.len() < 64 * 1024 {
            let i = self.next;
            let _ = write!(
                self.buf,
                "user{i}@example.com,User {i},{},{},{},2024-{:02}-{:02},{},{}.{:02},{},\"Company {}, Inc.\",{},City {}\r\n",
                plans[i % 4],
                i % 250 + 1,
                countries[i % 6],
                i % 12 + 1,
                i % 28 + 1,
                i % 17,
                i % 5000,
                i % 100,
                i % 3 != 0,
                i % 1000,
                if i % 10 == 0 {
                    "\"said \"\"hi\"\"\""
                } else {
                    ""
                },
                i % 50,
            );
            self.next += 1;
        }
    }
}

impl Read for Generator {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.next == self.rows {
                return Ok(0);
            }
            self.fill();
        }
        let n = (self.buf.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The mapping the CSV benches import with: the user id and 10 attributes.
pub fn mapping() -> switchboard::attributes::CsvMapping {
    switchboard::attributes::CsvMapping::new("Email")
        .attribute("Plan", "plan")
        .attribute("Seats", "seats")
        .attribute("Country", "country")
        .attribute("Signup", "signup")
        .attribute("Tickets", "support_tickets")
        .attribute("MRR", "mrr")
        .attribute("Active", "active")
        .attribute("Company", "company")
        .attribute("Notes", "notes")
        .attribute("City", "city")
}

/// This process's peak resident set size (VmHWM), in MB.
pub fn vm_hwm_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
