package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// result is the one JSON line a timing scenario prints; bench/util/gopeer.ts
// reads it as GoResult, so the field names are part of the interface.
type result struct {
	Scenario string  `json:"scenario"`
	Ops      int     `json:"ops"`
	Seconds  float64 `json:"seconds"`
	OpsPerS  float64 `json:"ops_per_s"`
	P50ms    float64 `json:"p50_ms,omitempty"`
	P99ms    float64 `json:"p99_ms,omitempty"`
	// Extra carries the scenario's correctness counts (a counter, a sum,
	// duplicates) so the benchmark can refuse a fast but wrong run.
	Extra map[string]float64 `json:"extra,omitempty"`
}

// latencies are per-operation durations of one run.
type latencies []time.Duration

// percentileMs is the p-th percentile in milliseconds by the rule the
// TypeScript side uses too: the sorted sample at index floor(p*(len-1)).
func (l latencies) percentileMs(p float64) float64 {
	if len(l) == 0 {
		return 0
	}
	sorted := append(latencies(nil), l...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	at := sorted[int(p*float64(len(sorted)-1))]
	return float64(at.Microseconds()) / 1000
}

// timeSequential runs op n times, one after another, and reports the wall
// time and the p50/p99 of the single operations.
func timeSequential(n int, op func() error) (result, error) {
	lat := make(latencies, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		opStart := time.Now()
		if err := op(); err != nil {
			return result{}, err
		}
		lat = append(lat, time.Since(opStart))
	}
	return result{Ops: n, Seconds: time.Since(start).Seconds(), P50ms: lat.percentileMs(.5), P99ms: lat.percentileMs(.99)}, nil
}

// emit prints r as the scenario's one JSON line, with its throughput
// derived from ops and seconds (0 when the scenario measures latency only).
func emit(scenario string, r result) error {
	r.Scenario = scenario
	if r.Seconds > 0 {
		r.OpsPerS = float64(r.Ops) / r.Seconds
	}
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}
