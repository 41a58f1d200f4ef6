//! larder-core benchmarks: key building, codec, and the guard's cost on a real Redis.
//!
//! Run with: `cargo bench -p larder-core` (starts its own redis-server on a free port).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use larder_core::{Codec, Config, Handle, Json, Keyspace, Module, Tenant};
use larder_testing::RedisServer;

#[derive(serde::Serialize, serde::Deserialize)]
struct Point {
    period: String,
    sales: f64,
    payments: f64,
    balance: f64,
}

fn series(n: usize) -> Vec<Point> {
    (0..n)
        .map(|i| Point {
            period: format!("2026-{:02}-{:02}", i / 28 + 1, i % 28 + 1),
            sales: 1234.5 + i as f64,
            payments: 1000.25,
            balance: 234.25 + i as f64,
        })
        .collect()
}

fn keyspace(c: &mut Criterion) {
    let ks = Keyspace::new("stock").expect("prefix");
    let tenant = Tenant::new("tenant-42").expect("tenant");
    let module = Module::new("balance").expect("module");
    let scope = ks.scope(&tenant, &module);
    let mut g = c.benchmark_group("keyspace");
    g.bench_function("tenant_validate", |b| {
        b.iter(|| Tenant::new(black_box("tenant-42")));
    });
    g.bench_function("scope_and_key", |b| {
        b.iter(|| {
            ks.scope(black_box(&tenant), black_box(&module))
                .key(black_box("GET:/balance?from=2026-01-01&to=2026-03-31"))
        });
    });
    g.bench_function("key_from_scope", |b| {
        b.iter(|| scope.key(black_box("GET:/balance?from=2026-01-01&to=2026-03-31")));
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_json");
    for n in [1usize, 90] {
        let value = series(n);
        let bytes = Json.encode(&value).expect("encode");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode", n), &value, |b, v| {
            b.iter(|| Json.encode(black_box(v)));
        });
        g.bench_with_input(BenchmarkId::new("decode", n), &bytes, |b, v| {
            b.iter(|| Json.decode::<Vec<Point>>(black_box(v)));
        });
    }
    g.finish();
}

fn guarded_get(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = rt.block_on(async {
        let config = Config::builder()
            .redis_url(&server.url())
            .build()
            .expect("config");
        let handle = Handle::new(config).expect("handle");
        let _: () = handle
            .query("set", redis::cmd("SET").arg("k").arg("v".repeat(64)))
            .await
            .expect("set");
        handle
    });
    // The very connection the guard uses, for the raw baseline.
    let conn = rt
        .block_on(handle.run("conn", |c| async move { Ok(c) }))
        .expect("conn");

    let mut g = c.benchmark_group("get_one");
    g.bench_function("raw_redis_rs", |b| {
        b.to_async(&rt).iter(|| {
            let mut c = conn.clone();
            async move {
                let v: String = redis::cmd("GET")
                    .arg("k")
                    .query_async(&mut c)
                    .await
                    .expect("get");
                v
            }
        });
    });
    g.bench_function("guarded", |b| {
        b.to_async(&rt).iter(|| async {
            let v: String = handle
                .query("get", redis::cmd("GET").arg("k"))
                .await
                .expect("get");
            v
        });
    });
    g.finish();

    let mut g = c.benchmark_group("get_32_concurrent");
    g.throughput(Throughput::Elements(32));
    g.bench_function("raw_redis_rs", |b| {
        b.to_async(&rt).iter(|| {
            join_all((0..32).map(|_| {
                let mut c = conn.clone();
                async move {
                    let v: String = redis::cmd("GET")
                        .arg("k")
                        .query_async(&mut c)
                        .await
                        .expect("get");
                    v
                }
            }))
        });
    });
    g.bench_function("guarded", |b| {
        b.to_async(&rt).iter(|| {
            join_all((0..32).map(|_| async {
                let v: String = handle
                    .query("get", redis::cmd("GET").arg("k"))
                    .await
                    .expect("get");
                v
            }))
        });
    });
    g.finish();
    drop(server);
}

criterion_group!(benches, keyspace, codec, guarded_get);
criterion_main!(benches);
