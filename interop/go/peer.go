package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	recipe "go.etcd.io/etcd/contrib/recipes"
)

// The interop helpers each take one recipe named by -prefix, print a line
// at every step another client can observe ("locked", "unlocked", ...) and
// hold what they took for -n milliseconds. Tests wait for those lines.

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
// "entered", Leave, "left".
func doubleBarrier(_ context.Context, cli *clientv3.Client, o options) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL))
	if err != nil {
		return err
	}
	defer sess.Close()
	b := recipe.NewDoubleBarrier(sess, o.prefix, o.workers)
	if err := b.Enter(); err != nil {
		return err
	}
	fmt.Println("entered")
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
