// Package loadtest is envgate's load generator: it aims HTTP(S) traffic at
// environment hostnames on one address and reports latency, throughput and
// errors, including responses that came from the wrong environment.
//
// It owns the traffic schedule, the HTTP client it builds for a run, and the
// report format (the JSON shape is a contract shared with --compare and the
// benchmark scripts). It never resolves names: every connection goes to
// Options.Addr, and the hostname travels only in the Host header and SNI, so
// any server that routes by hostname can be the target, not only the gateway.
//
// Two modes:
//
//   - Open loop (Options.Rate > 0): a scheduler lays requests on a timeline at
//     the rate, and latency is measured from each request's scheduled time,
//     not from when it was actually sent. A stalled server therefore shows up
//     in every request that should have been sent during the stall, which
//     avoids coordinated omission (the approach of wrk2 and vegeta).
//   - Closed loop (Options.Concurrency > 0): a fixed number of workers each
//     send a request as soon as the previous one finished; latency is
//     measured from the actual send.
//
// Latency percentiles come from HdrHistogram and are reported overall and
// split into cold requests (the response carried the gateway's
// Envgate-Cold-Start header, or it was the generator's first request to that
// host) and warm ones.
//
// The generator keeps its own cost small and bounded (sharded histograms, a
// capped number of requests in flight, a capped scheduling queue) and says in
// the report when it, rather than the server, limited the run.
package loadtest
