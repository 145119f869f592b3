//! Glob matching (`helios::Pattern`), used for middleware, event handlers
//! and room rules.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use helios::Pattern;
use std::hint::black_box;

fn glob(c: &mut Criterion) {
    let cases = [
        ("exact", "chat:lobby", "chat:lobby"),
        ("one", "chat:*", "chat:lobby"),
        ("many", "api:**", "api:users.list.all"),
        ("many-middle", "a:**:z", "a:b:c:d:e:f:z"),
        ("miss", "user:*", "admin:create"),
    ];
    for (name, pat, input) in cases {
        let p = Pattern::new(pat).expect("valid pattern");
        c.bench_function(&format!("glob/matches/{name}"), |b| {
            b.iter(|| p.matches(black_box(input)))
        });
    }
    let p = Pattern::new("doc:*:rev:*").expect("valid pattern");
    c.bench_function("glob/captures/two", |b| {
        b.iter(|| p.captures(black_box("doc:7:rev:3")))
    });
    // A table of patterns scanned in order, as the router does for pattern
    // event handlers and middleware chains of fallback methods.
    let table: Vec<Pattern> = (0..32)
        .map(|i| Pattern::new(&format!("ns{i}:*:x")).expect("valid pattern"))
        .collect();
    c.bench_function("glob/table-32/scan", |b| {
        b.iter(|| {
            table
                .iter()
                .filter(|p| p.matches(black_box("ns31:a:x")))
                .count()
        })
    });
}

criterion_group!(benches, glob);
criterion_main!(benches);
