// Summarizes bench/run.sh results (JSON lines of helios-bench reports).
//   node summarize.js FILE              table, ratios vs Helios, targets
//   node summarize.js --line < REPORT   one-line summary of one report
//   node summarize.js --half FILE NAME  half of NAME's closed-loop rpc rate
'use strict';
const fs = require('fs');

const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  if (!s.length) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x, d = 0) => (x == null ? '-' : Number(x).toLocaleString('en-US', { maximumFractionDigits: d }));
const LG_LIMIT = 90; // % of its core: above this the generator may be the limit
// The open loop's spinning sender keeps its core busy whatever the load, so
// there the sign of trouble is requests leaving late: the generator is at its
// limit, or the server does not drain its sockets (the lag cannot tell which).
const LAG_LIMIT_US = 100;
const saturated = (r) => (r.schedule_lag_us ? r.schedule_lag_us.p99 > LAG_LIMIT_US : r.client_cpu_pct > LG_LIMIT);
const flagText = (r) => (r.schedule_lag_us ? '[REQUESTS LEFT LATE: generator or server behind]' : '[LOAD GENERATOR SATURATED]');

function line(r) {
  const cpu = `cpu lg ${fmt(r.client_cpu_pct)}% srv ${fmt(r.server_cpu_pct)}%`;
  const lag = r.schedule_lag_us ? `, schedule lag p99 ${fmt(r.schedule_lag_us.p99)} µs` : '';
  const flag = saturated(r) ? `  ${flagText(r)}` : '';
  if (r.mode && r.mode.startsWith('rpc')) {
    return `${fmt(r.throughput_rps)} req/s, p50 ${fmt(r.latency_us.p50)} µs, p99 ${fmt(r.latency_us.p99)} µs, p99.9 ${fmt(r.latency_us.p999)} µs, errors ${r.errors}, ${cpu}${lag}${flag}`;
  }
  if (r.mode === 'fanout') {
    return `${fmt(r.deliveries_per_sec)} deliveries/s of ${fmt(r.expected_deliveries / r.duration_secs)}, missing ${r.missing}, out-of-order ${r.out_of_order}, p50 ${fmt(r.latency_us.p50)} µs, p99 ${fmt(r.latency_us.p99)} µs, ${cpu}${flag}`;
  }
  if (r.mode === 'idle') {
    return `${fmt(r.connections_open)} open (${r.failed} failed), RSS ${fmt(r.rss_before_kib)} → ${fmt(r.rss_after_kib)} KiB, ${fmt(r.bytes_per_connection)} B/conn`;
  }
  return JSON.stringify(r);
}

function load(file) {
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

const METRICS = {
  rpc: [['req/s', (r) => r.throughput_rps, 'hi'], ['p50 µs', (r) => r.latency_us.p50], ['p99 µs', (r) => r.latency_us.p99], ['lg cpu%', (r) => r.client_cpu_pct], ['srv cpu%', (r) => r.server_cpu_pct]],
  'rpc-half': [['rate', (r) => r.rate], ['req/s', (r) => r.throughput_rps], ['p50 µs', (r) => r.latency_us.p50], ['p99 µs', (r) => r.latency_us.p99], ['p99.9 µs', (r) => r.latency_us.p999], ['lg lag p99 µs', (r) => r.schedule_lag_us && r.schedule_lag_us.p99]],
  fanout: [['deliv/s', (r) => r.deliveries_per_sec, 'hi'], ['missing', (r) => r.missing], ['ooo', (r) => r.out_of_order], ['p50 µs', (r) => r.latency_us.p50], ['p99 µs', (r) => r.latency_us.p99], ['lg cpu%', (r) => r.client_cpu_pct], ['srv cpu%', (r) => r.server_cpu_pct]],
  'fanout-hi': [['deliv/s', (r) => r.deliveries_per_sec, 'hi'], ['missing', (r) => r.missing], ['ooo', (r) => r.out_of_order], ['p50 µs', (r) => r.latency_us.p50], ['p99 µs', (r) => r.latency_us.p99], ['lg cpu%', (r) => r.client_cpu_pct], ['srv cpu%', (r) => r.server_cpu_pct]],
  idle: [['open', (r) => r.connections_open], ['B/conn', (r) => r.bytes_per_connection, 'lo']],
  'idle-max': [['open', (r) => r.connections_open], ['B/conn', (r) => r.bytes_per_connection, 'lo']],
};

function table(file) {
  const rows = load(file);
  const med = {};
  for (const test of Object.keys(METRICS)) {
    const servers = [...new Set(rows.filter((r) => r.test === test).map((r) => r.server))];
    if (!servers.length) continue;
    const cols = METRICS[test];
    console.log(`\n## ${test}${test === 'rpc' || test.startsWith('fanout') ? ' (median of rounds)' : ''}\n`);
    const head = ['server', ...cols.map((c) => c[0]), 'vs helios', 'runs'];
    console.log(`| ${head.join(' | ')} |`);
    console.log(`|${head.map(() => '---').join('|')}|`);
    for (const s of servers) {
      const runs = rows.filter((r) => r.test === test && r.server === s).map((r) => r.report);
      const vals = cols.map((c) => median(runs.map(c[1])));
      (med[test] ||= {})[s] = vals;
      const key = cols.findIndex((c) => c[2]);
      const flagged = runs.some(saturated) ? (test === 'rpc-half' ? ' (late)' : ' (lg saturated)') : '';
      let ratio = '-';
      const h = med[test].helios;
      if (key >= 0 && h && vals[key]) ratio = s === 'helios' ? '1.00' : cols[key][2] === 'hi' ? `helios ${(h[key] / vals[key]).toFixed(2)}× faster` : `helios uses ${(h[key] / vals[key]).toFixed(2)}×`;
      console.log(`| ${s}${flagged} | ${vals.map((v) => fmt(v, 1)).join(' | ')} | ${ratio} | ${runs.length} |`);
    }
  }
  const get = (t, s, i) => med[t] && med[t][s] && med[t][s][i];
  console.log('\n## Targets\n');
  const rh = get('rpc', 'helios', 0), rb = get('rpc', 'bun', 0);
  if (rh && rb) console.log(`- RPC echo ≥ 3× Bun: ${(rh / rb).toFixed(2)}× (${fmt(rh)} vs ${fmt(rb)} req/s) → ${rh >= 3 * rb ? 'MET' : `MISSED (needs ${fmt(3 * rb)} req/s, ${((3 * rb) / rh).toFixed(2)}× more)`}`);
  const fh = get('fanout-hi', 'helios', 0), fb = get('fanout-hi', 'bun', 0);
  if (fh && fb) console.log(`- Fan-out ≥ Bun publish: ${(fh / fb).toFixed(2)}× (${fmt(fh)} vs ${fmt(fb)} deliveries/s) → ${fh >= fb ? 'MET' : 'MISSED'}`);
  const ih = get('idle-max', 'helios', 1) ?? get('idle', 'helios', 1), n = get('idle-max', 'helios', 0) ?? get('idle', 'helios', 0);
  if (ih) console.log(`- ≤ 2 KiB per idle connection: ${fmt(ih)} B/conn at ${fmt(n)} connections → ${ih <= 2048 ? 'MET' : `MISSED by ${fmt(ih - 2048)} B (${(ih / 2048).toFixed(2)}×)`}`);
  const ph = get('rpc-half', 'helios', 3);
  if (ph != null) console.log(`- p99 < 1 ms at half max load: p99 ${fmt(ph, 1)} µs at ${fmt(get('rpc-half', 'helios', 0))} req/s → ${ph < 1000 ? 'MET' : `MISSED (${(ph / 1000).toFixed(2)}×)`}`);
}

const argv = process.argv.slice(2);
if (argv[0] === '--line') {
  console.log(line(JSON.parse(fs.readFileSync(0, 'utf8'))));
} else if (argv[0] === '--half') {
  const runs = load(argv[1]).filter((r) => r.test === 'rpc' && r.server === argv[2]);
  const last = runs[runs.length - 1];
  console.log(Math.max(100, Math.round((last ? last.report.throughput_rps : 2000) / 2)));
} else if (argv[0]) {
  table(argv[0]);
} else {
  console.error('usage: node summarize.js FILE | --line | --half FILE NAME');
  process.exit(2);
}
