package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	recipe "go.etcd.io/etcd/client/v3/experimental/recipes"
)

// sessionTTL is the lease TTL (seconds) of the sessions a scenario opens per
// operation, as a per-invocation wrapper would.
const sessionTTL = 10

// putFloor times one Put round trip, n times in sequence: the floor every
// other latency is compared with.
func putFloor(ctx context.Context, cli *clientv3.Client, o options) error {
	key := o.prefix + "/put"
	r, err := timeSequential(o.n, func() error {
		_, err := cli.Put(ctx, key, "v")
		return err
	})
	if err != nil {
		return err
	}
	return emit(o.scenario, r)
}

// lockPerInvocation times what a per-invocation lock costs in Go: a new
// session, Mutex.Lock, Mutex.Unlock and closing the session (a lease
// revoke), n times in sequence.
func lockPerInvocation(ctx context.Context, cli *clientv3.Client, o options) error {
	key := o.prefix + "/lock-inv"
	r, err := timeSequential(o.n, func() error {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
		if err != nil {
			return err
		}
		m := concurrency.NewMutex(sess, key)
		if err := m.Lock(ctx); err != nil {
			sess.Close()
			return err
		}
		if err := m.Unlock(ctx); err != nil {
			sess.Close()
			return err
		}
		return sess.Close()
	})
	if err != nil {
		return err
	}
	return emit(o.scenario, r)
}

// lockUncontended times Mutex.Lock + Mutex.Unlock on one long-lived session,
// n times in sequence.
func lockUncontended(ctx context.Context, cli *clientv3.Client, o options) error {
	sess, err := concurrency.NewSession(cli)
	if err != nil {
		return err
	}
	defer sess.Close()
	m := concurrency.NewMutex(sess, o.prefix+"/lock-unc")
	r, err := timeSequential(o.n, func() error {
		if err := m.Lock(ctx); err != nil {
			return err
		}
		return m.Unlock(ctx)
	})
	if err != nil {
		return err
	}
	return emit(o.scenario, r)
}

// lockContended runs c workers, each on its own session, each n times:
// Mutex.Lock, read-modify-write a counter key, Mutex.Unlock. The counter
// must end at c*n; extra.counter and extra.expected let the benchmark check.
func lockContended(ctx context.Context, cli *clientv3.Client, o options) error {
	counter := o.prefix + "/counter"
	if o.gate {
		// One of several processes: the benchmark set the counter; wait for its go.
		fmt.Println(`{"ready":true}`)
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fmt.Errorf("waiting for the start line on stdin: %w", err)
		}
	} else if _, err := cli.Put(ctx, counter, "0"); err != nil {
		return err
	}
	start := time.Now()
	runWorkers(o.workers, func(int) error {
		// The session is created inside the timed region, as each worker would on a cold start.
		sess, err := concurrency.NewSession(cli)
		if err != nil {
			return err
		}
		defer sess.Close()
		m := concurrency.NewMutex(sess, o.prefix+"/lock-con")
		for i := 0; i < o.n; i++ {
			if err := m.Lock(ctx); err != nil {
				return err
			}
			if err := increment(ctx, cli, counter); err != nil {
				return err
			}
			if err := m.Unlock(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	end := time.Now()
	seconds := end.Sub(start).Seconds()
	final, err := readInt(ctx, cli, counter)
	if err != nil {
		return err
	}
	total := o.workers * o.n
	// Wall-clock start and end let the benchmark measure several processes as one run.
	extra := map[string]float64{"counter": float64(final), "expected": float64(total), "start_unix_ms": float64(start.UnixNano()) / 1e6, "end_unix_ms": float64(end.UnixNano()) / 1e6}
	return emit(o.scenario, result{Ops: total, Seconds: seconds, Extra: extra})
}

// queueThroughput moves c*n items through one recipes.Queue: c producers
// Enqueue n items each and c consumers Dequeue n each, every one on its own
// client. extra.distinct must be c*n and extra.duplicates 0.
func queueThroughput(ctx context.Context, _ *clientv3.Client, o options) error {
	name := o.prefix + "/q"
	var mu sync.Mutex
	seen := map[string]int{}
	start := time.Now()
	runWorkers(2*o.workers, func(w int) error {
		cli, err := o.dial()
		if err != nil {
			return err
		}
		defer cli.Close()
		q := recipe.NewQueue(cli, name)
		if w < o.workers {
			for i := 0; i < o.n; i++ {
				if err := q.Enqueue(fmt.Sprintf("%d-%d", w, i)); err != nil {
					return err
				}
			}
			return nil
		}
		for i := 0; i < o.n; i++ {
			v, err := q.Dequeue()
			if err != nil {
				return err
			}
			mu.Lock()
			seen[v]++
			mu.Unlock()
		}
		return nil
	})
	seconds := time.Since(start).Seconds()
	duplicates := 0
	for _, times := range seen {
		duplicates += times - 1
	}
	return emit(o.scenario, result{Ops: o.workers * o.n, Seconds: seconds, Extra: map[string]float64{"distinct": float64(len(seen)), "duplicates": float64(duplicates)}})
}

// stmAccounts is the bank's size; each account starts at 100.
const stmAccounts = 5

// stmBank runs c workers x n concurrency.NewSTM transfers of half a random
// account's balance to another. The sum must stay 100*stmAccounts;
// extra.applies counts every run of the transfer body (retries included).
func stmBank(ctx context.Context, cli *clientv3.Client, o options) error {
	account := func(i int) string { return fmt.Sprintf("%s/accts/%d", o.prefix, i) }
	for i := 0; i < stmAccounts; i++ {
		if _, err := cli.Put(ctx, account(i), "100"); err != nil {
			return err
		}
	}
	var applies int64
	transfer := func(stm concurrency.STM) error {
		atomic.AddInt64(&applies, 1)
		// The pair is drawn inside the body, so a retry picks a fresh pair. No
		// rand.Seed: since Go 1.20 the top-level functions start randomly seeded
		// (and since 1.24 Seed does nothing).
		from, to := rand.Intn(stmAccounts), rand.Intn(stmAccounts)
		if from == to {
			return nil
		}
		fromBalance, err := strconv.Atoi(stm.Get(account(from)))
		if err != nil {
			return err
		}
		toBalance, err := strconv.Atoi(stm.Get(account(to)))
		if err != nil {
			return err
		}
		moved := fromBalance / 2
		stm.Put(account(from), strconv.Itoa(fromBalance-moved))
		stm.Put(account(to), strconv.Itoa(toBalance+moved))
		return nil
	}
	start := time.Now()
	runWorkers(o.workers, func(int) error {
		for i := 0; i < o.n; i++ {
			if _, err := concurrency.NewSTM(cli, transfer); err != nil {
				return err
			}
		}
		return nil
	})
	seconds := time.Since(start).Seconds()
	sum, err := sumPrefix(ctx, cli, o.prefix+"/accts/")
	if err != nil {
		return err
	}
	return emit(o.scenario, result{Ops: o.workers * o.n, Seconds: seconds, Extra: map[string]float64{"sum": float64(sum), "applies": float64(atomic.LoadInt64(&applies))}})
}

// electionFailover times, n times, how long a waiting candidate's
// Election.Campaign takes to return after the leader's session is closed
// (its lease revoked). Only latencies are reported (seconds is 0).
func electionFailover(ctx context.Context, cli *clientv3.Client, o options) error {
	lat := make(latencies, 0, o.n)
	for i := 0; i < o.n; i++ {
		took, err := failoverOnce(ctx, cli, fmt.Sprintf("%s/failover-%d", o.prefix, i))
		if err != nil {
			return err
		}
		lat = append(lat, took)
	}
	return emit(o.scenario, result{Ops: o.n, P50ms: lat.percentileMs(.5), P99ms: lat.percentileMs(.99)})
}

// failoverOnce elects a leader on one session, starts a second candidate on
// another, closes the leader's session and returns how long the candidate
// then took to be elected.
func failoverOnce(ctx context.Context, cli *clientv3.Client, name string) (time.Duration, error) {
	candidate, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return 0, err
	}
	defer candidate.Close()
	leader, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return 0, err
	}
	if err := concurrency.NewElection(leader, name).Campaign(ctx, "a"); err != nil {
		leader.Close()
		return 0, err
	}
	elected := make(chan error, 1)
	go func() { elected <- concurrency.NewElection(candidate, name).Campaign(ctx, "b") }()
	// Give the candidate time to write its key and start waiting, so what is
	// timed is the handover and not an uncontested campaign.
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if err := leader.Close(); err != nil {
		return 0, err
	}
	if err := <-elected; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// runWorkers runs work(0..count-1) on as many goroutines and waits for all.
// A failing worker ends the process: its peers may be blocked in calls that
// take no context (recipes.Queue.Dequeue waits for an item that will never
// come), so waiting for them to notice could hang the benchmark.
func runWorkers(count int, work func(worker int) error) {
	var wg sync.WaitGroup
	for w := 0; w < count; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if err := work(w); err != nil {
				fmt.Fprintf(os.Stderr, "worker %d: %v\n", w, err)
				os.Exit(1)
			}
		}(w)
	}
	wg.Wait()
}

// increment reads an integer key and writes it back plus one; it is only
// safe under a lock, which is what lockContended checks.
func increment(ctx context.Context, cli *clientv3.Client, key string) error {
	v, err := readInt(ctx, cli, key)
	if err != nil {
		return err
	}
	_, err = cli.Put(ctx, key, strconv.Itoa(v+1))
	return err
}

// readInt reads an integer stored at key.
func readInt(ctx context.Context, cli *clientv3.Client, key string) (int, error) {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("key %s is missing", key)
	}
	return strconv.Atoi(string(resp.Kvs[0].Value))
}

// sumPrefix adds up the integers stored under prefix.
func sumPrefix(ctx context.Context, cli *clientv3.Client, prefix string) (int, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	sum := 0
	for _, kv := range resp.Kvs {
		v, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			return 0, fmt.Errorf("%s holds %q, not an integer", kv.Key, kv.Value)
		}
		sum += v
	}
	return sum, nil
}
