package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	recipe "go.etcd.io/etcd/client/v3/experimental/recipes"
)

// The interop helpers each take one recipe named by -prefix, print a line
// at every step another client can observe ("locked", "unlocked", ...) and
// hold what they took for -n milliseconds. Tests wait for those lines. An
// outcome the recipe reports as an error but a test provokes on purpose
// (ErrLocked, ErrSessionExpired, ErrTooManyClients) is printed as a line and
// exits 0, so that a test can tell it from a failure of the helper itself.

// holdLock takes concurrency.Mutex <prefix>, prints "locked <key> <revision>",
// holds it, unlocks and prints "unlocked".
func holdLock(ctx context.Context, cli *clientv3.Client, o options) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	defer sess.Close()
	m := concurrency.NewMutex(sess, o.prefix)
	if err := m.Lock(ctx); err != nil {
		return err
	}
	fmt.Println("locked", m.Key(), m.Header().Revision)
	holdFor(o)
	if err := m.Unlock(ctx); err != nil {
		return err
	}
	fmt.Println("unlocked")
	return nil
}

// tryLock runs concurrency.Mutex <prefix>'s TryLock (3.5+). When the lock was
// free it prints "locked <key> <revision>", holds it, unlocks and prints
// "unlocked"; when another session holds it (ErrLocked) it prints "busy".
// Either way it then checks that no key of its session is left under the
// lock: TryLock puts its key before it knows, and must take it away again.
func tryLock(ctx context.Context, cli *clientv3.Client, o options) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	defer sess.Close()
	m := concurrency.NewMutex(sess, o.prefix)
	switch err := m.TryLock(ctx); {
	case errors.Is(err, concurrency.ErrLocked):
		fmt.Println("busy")
	case err != nil:
		return err
	default:
		fmt.Println("locked", m.Key(), m.Header().Revision)
		holdFor(o)
		if err := m.Unlock(ctx); err != nil {
			return err
		}
		fmt.Println("unlocked")
	}
	// Checked before the deferred Close, whose revoke would delete a leftover key.
	return noKeyOf(ctx, sess, o.prefix+"/")
}

// lockWait queues on concurrency.Mutex <prefix> and prints "waiting <key>
// <leaseHex>" once its key is in etcd, so that a test can revoke that lease
// while it waits. Lock returns only once every older key is gone; if its own
// key went meanwhile, Go 3.5+ returns ErrSessionExpired and this prints
// "session-expired" (3.4's Lock returned nil: it reported a lock it did not
// hold). A granted lock prints "locked <key> <revision>", is held for -n ms,
// unlocked, and "unlocked" follows.
func lockWait(ctx context.Context, cli *clientv3.Client, o options) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	// Close fails once the lease is revoked (lease not found); nothing is left to clean up then.
	defer sess.Close()
	m := concurrency.NewMutex(sess, o.prefix)
	leaseHex := fmt.Sprintf("%x", sess.Lease())
	// The key Go's Mutex puts for this session: <prefix>/<lease in %x>.
	key := o.prefix + "/" + leaseHex
	result := make(chan error, 1)
	go func() { result <- m.Lock(ctx) }()
	lockErr, returned := error(nil), false
	for !returned {
		resp, err := cli.Get(ctx, key, clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count > 0 {
			break
		}
		select {
		case lockErr = <-result:
			returned = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	fmt.Println("waiting", key, leaseHex)
	if !returned {
		lockErr = <-result
	}
	switch {
	case errors.Is(lockErr, concurrency.ErrSessionExpired):
		fmt.Println("session-expired")
		return nil
	case lockErr != nil:
		return lockErr
	}
	fmt.Println("locked", m.Key(), m.Header().Revision)
	holdFor(o)
	if err := m.Unlock(ctx); err != nil {
		return err
	}
	fmt.Println("unlocked")
	return nil
}

// noKeyOf fails if any key under prefix carries sess's lease.
func noKeyOf(ctx context.Context, sess *concurrency.Session, prefix string) error {
	// Not WithKeysOnly: etcd 3.7 answers keys-only ranges from its index, which has no leases
	// (etcd #22209), and this check is by lease.
	resp, err := sess.Client().Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	var left []string
	for _, kv := range resp.Kvs {
		if kv.Lease == int64(sess.Lease()) {
			left = append(left, string(kv.Key))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("session %x left %s under %s", sess.Lease(), strings.Join(left, ", "), prefix)
	}
	return nil
}

// campaign runs concurrency.Election <prefix>'s Campaign with the first
// positional argument as value, prints "leader <key>", stays leader, resigns
// and prints "resigned".
func campaign(ctx context.Context, cli *clientv3.Client, o options) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	defer sess.Close()
	e := concurrency.NewElection(sess, o.prefix)
	if err := e.Campaign(ctx, firstArg(o)); err != nil {
		return err
	}
	fmt.Println("leader", e.Key())
	holdFor(o)
	if err := e.Resign(ctx); err != nil {
		return err
	}
	fmt.Println("resigned")
	return nil
}

// enqueue puts every positional argument on recipes.Queue <prefix>, in order.
func enqueue(_ context.Context, cli *clientv3.Client, o options) error {
	q := recipe.NewQueue(cli, o.prefix)
	for _, v := range o.args {
		if err := q.Enqueue(v); err != nil {
			return err
		}
	}
	return nil
}

// priorityEnqueue reads the positional arguments as value/priority pairs
// and puts each on recipes.PriorityQueue <prefix>.
func priorityEnqueue(_ context.Context, cli *clientv3.Client, o options) error {
	if len(o.args)%2 != 0 {
		return fmt.Errorf("penqueue takes value/priority pairs, got %d arguments: pass VALUE PRIORITY ...", len(o.args))
	}
	q := recipe.NewPriorityQueue(cli, o.prefix)
	for i := 0; i < len(o.args); i += 2 {
		priority, err := strconv.ParseUint(o.args[i+1], 10, 16)
		if err != nil {
			return fmt.Errorf("priority %q of %q is not an integer in 0..65535", o.args[i+1], o.args[i])
		}
		if err := q.Enqueue(o.args[i], uint16(priority)); err != nil {
			return err
		}
	}
	return nil
}

// dequeue takes -n items from recipes.Queue <prefix>, waiting for each, and
// prints one per line.
func dequeue(_ context.Context, cli *clientv3.Client, o options) error {
	return printDequeued(o.n, recipe.NewQueue(cli, o.prefix).Dequeue)
}

// priorityDequeue takes -n items from recipes.PriorityQueue <prefix>,
// lowest priority first, and prints one per line.
func priorityDequeue(_ context.Context, cli *clientv3.Client, o options) error {
	return printDequeued(o.n, recipe.NewPriorityQueue(cli, o.prefix).Dequeue)
}

// printDequeued calls take n times and prints each value it returns.
func printDequeued(n int, take func() (string, error)) error {
	for i := 0; i < n; i++ {
		v, err := take()
		if err != nil {
			return err
		}
		fmt.Println(v)
	}
	return nil
}

// doubleBarrier joins recipes.DoubleBarrier <prefix> of -c members: Enter,
// "entered", hold -n ms, Leave, "left". If -c members are in already, Enter
// returns ErrTooManyClients (3.5.6+) and this prints "too-many" and checks
// that its session left no key under <prefix>/waiters (3.4 left it there).
func doubleBarrier(ctx context.Context, cli *clientv3.Client, o options) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	defer sess.Close()
	b := recipe.NewDoubleBarrier(sess, o.prefix, o.workers)
	switch err := b.Enter(); {
	case errors.Is(err, recipe.ErrTooManyClients):
		fmt.Println("too-many")
		return noKeyOf(ctx, sess, o.prefix+"/waiters/")
	case err != nil:
		return err
	}
	fmt.Println("entered")
	holdFor(o)
	if err := b.Leave(); err != nil {
		return err
	}
	fmt.Println("left")
	return nil
}

// barrierHold raises recipes.Barrier <prefix>, prints "held", keeps it up,
// releases it and prints "released".
func barrierHold(_ context.Context, cli *clientv3.Client, o options) error {
	b := recipe.NewBarrier(cli, o.prefix)
	if err := b.Hold(); err != nil {
		return err
	}
	fmt.Println("held")
	holdFor(o)
	if err := b.Release(); err != nil {
		return err
	}
	fmt.Println("released")
	return nil
}

// barrierWait waits on recipes.Barrier <prefix> and prints "passed".
func barrierWait(_ context.Context, cli *clientv3.Client, o options) error {
	if err := recipe.NewBarrier(cli, o.prefix).Wait(); err != nil {
		return err
	}
	fmt.Println("passed")
	return nil
}

// readLock read-locks recipes.RWMutex <prefix>: RLock, "locked", RUnlock,
// "unlocked".
func readLock(_ context.Context, cli *clientv3.Client, o options) error {
	return holdRWMutex(cli, o, (*recipe.RWMutex).RLock, (*recipe.RWMutex).RUnlock)
}

// writeLock write-locks recipes.RWMutex <prefix>: Lock, "locked", Unlock,
// "unlocked".
func writeLock(_ context.Context, cli *clientv3.Client, o options) error {
	return holdRWMutex(cli, o, (*recipe.RWMutex).Lock, (*recipe.RWMutex).Unlock)
}

// holdRWMutex takes recipes.RWMutex <prefix> with lock, holds it and lets it
// go with unlock, printing "locked" and "unlocked".
func holdRWMutex(cli *clientv3.Client, o options, lock, unlock func(*recipe.RWMutex) error) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	defer sess.Close()
	m := recipe.NewRWMutex(sess, o.prefix)
	if err := lock(m); err != nil {
		return err
	}
	fmt.Println("locked")
	holdFor(o)
	if err := unlock(m); err != nil {
		return err
	}
	fmt.Println("unlocked")
	return nil
}

// holdFor sleeps -n milliseconds: how long a helper keeps what it took.
func holdFor(o options) {
	time.Sleep(time.Duration(o.n) * time.Millisecond)
}

// firstArg is the first positional argument, or "" when there is none.
func firstArg(o options) string {
	if len(o.args) == 0 {
		return ""
	}
	return o.args[0]
}
