// Command interop-go runs etcd's own Go recipes, from the client/v3 module
// pinned in go.mod — client/v3/concurrency (Session, Mutex, Election, STM)
// and client/v3/experimental/recipes (Queue, PriorityQueue, Barrier,
// DoubleBarrier, RWMutex) — against an etcd that middy-etcd also uses. The
// tests pair its helper scenarios with the TypeScript primitives to show both
// sides read each other's keys; the benchmark times the same workloads in Go
// beside ours. README.md beside this file lists both.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// options is the parsed command line, shared by every scenario.
type options struct {
	endpoints []string
	scenario  string
	// n is the operation count (per worker where there are workers); the
	// helpers that hold something read it as the hold time in milliseconds.
	n       int
	workers int
	prefix  string
	// args are the positional arguments: values to enqueue, a candidate's value.
	args []string
	// gate makes lock-contended one of several processes on one lock: it
	// leaves the counter as it is, prints {"ready":true} once connected and
	// starts when a line arrives on stdin, so that all start together.
	gate bool
}

// scenario runs one named workload on a connected client.
type scenario func(ctx context.Context, cli *clientv3.Client, o options) error

// scenarios maps each -scenario name to what it runs: timing scenarios
// (bench.go) print one JSON line, interop helpers (peer.go) one line per
// step another client can observe.
var scenarios = map[string]scenario{
	"put":               putFloor,
	"lock-invocation":   lockPerInvocation,
	"lock-uncontended":  lockUncontended,
	"lock-contended":    lockContended,
	"queue":             queueThroughput,
	"stm":               stmBank,
	"election-failover": electionFailover,

	"hold-lock":      holdLock,
	"trylock":        tryLock,
	"lock-wait":      lockWait,
	"campaign":       campaign,
	"enqueue":        enqueue,
	"penqueue":       priorityEnqueue,
	"dequeue":        dequeue,
	"pdequeue":       priorityDequeue,
	"double-barrier": doubleBarrier,
	"barrier-hold":   barrierHold,
	"barrier-wait":   barrierWait,
	"rlock":          readLock,
	"wlock":          writeLock,
}

// main runs the scenario named by -scenario; it exits 1 when the scenario
// fails and 2 when there is no such scenario.
func main() {
	o := parseOptions()
	run, known := scenarios[o.scenario]
	if !known {
		fmt.Fprintf(os.Stderr, "unknown -scenario %q: use one of %s\n", o.scenario, strings.Join(scenarioNames(), ", "))
		os.Exit(2)
	}
	if err := dialAndRun(run, o); err != nil {
		fmt.Fprintf(os.Stderr, "scenario %s: %v\n", o.scenario, err)
		os.Exit(1)
	}
}

// parseOptions reads the command line the tests and the benchmark pass:
// -endpoints -scenario -n -c -prefix, then positional arguments.
func parseOptions() options {
	endpoints := flag.String("endpoints", "http://127.0.0.1:2379", "comma-separated etcd endpoints")
	name := flag.String("scenario", "lock-uncontended", "scenario to run: "+strings.Join(scenarioNames(), ", "))
	n := flag.Int("n", 200, "operations (per worker where there are workers); hold time in ms for the holding helpers")
	workers := flag.Int("c", 10, "concurrent workers (goroutines); the member count for double-barrier")
	prefix := flag.String("prefix", "gopeer", "key prefix (the recipe's name for the helpers)")
	gate := flag.Bool("gate", false, "lock-contended: share the counter with other processes and start on a line on stdin")
	flag.Parse()
	return options{
		endpoints: strings.Split(*endpoints, ","),
		scenario:  *name,
		n:         *n,
		workers:   *workers,
		prefix:    *prefix,
		args:      flag.Args(),
		gate:      *gate,
	}
}

// scenarioNames lists the scenarios in a stable order for usage messages.
func scenarioNames() []string {
	names := make([]string, 0, len(scenarios))
	for name := range scenarios {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// dialAndRun connects to etcd, runs the scenario and closes the client, so
// that sessions the scenario closed have had their leases revoked.
func dialAndRun(run scenario, o options) error {
	cli, err := o.dial()
	if err != nil {
		return err
	}
	defer cli.Close()
	return run(context.Background(), cli, o)
}

// dial opens a client on the configured endpoints; a scenario that wants a
// client per worker calls it again.
func (o options) dial() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: o.endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd at %s: %w", strings.Join(o.endpoints, ","), err)
	}
	return cli, nil
}
