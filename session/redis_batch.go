package session

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dws-gateway/dws/internal/safego"
)

// batchOp is one key's share of a pipelined batch, prepared while holding
// that key's io mutex (so no Acquire, Join or release of the same key runs
// between the decision and the write).
type batchOp struct {
	fill   func(p redis.Pipeliner) redis.Cmder // queues the command
	done   func(c redis.Cmder)                 // applies the reply (c.Err() may be set)
	unlock func()                              // releases the key's io mutex
}

// takeIO takes a key's io mutex (see batchOp): waiting for it when block,
// otherwise only if it is free, so the worker never waits behind an
// Acquire or Join.
func takeIO(io *sync.Mutex, block bool) bool {
	if block {
		io.Lock()
		return true
	}
	return io.TryLock()
}

// job is a queued background release. It prepares its batch op when the
// worker runs it (a store's prep method with block=false): ok=false means
// nothing to send; busy means the key's io mutex was held elsewhere (an
// Acquire or Join), so the job is retried shortly.
type job func() (op batchOp, ok, busy bool)

// jobRetryDelay spaces retries of a job whose key is busy, so the worker
// never spins.
const jobRetryDelay = 25 * time.Millisecond

// enqueue hands a release to the background worker; never blocks (Release
// and Leave are called on event loops).
func (c *redisCore) enqueue(j job) {
	c.jobsMu.Lock()
	c.jobs = append(c.jobs, j)
	c.jobsMu.Unlock()
	select {
	case c.jobSig <- struct{}{}:
	default:
	}
}

// dropJobs forgets queued releases (Close sweeps every key instead).
func (c *redisCore) dropJobs() {
	c.jobsMu.Lock()
	c.jobs = nil
	c.jobsMu.Unlock()
}

// worker completes releases in pipelined batches. A job whose key is busy
// is retried shortly; one that fails because Redis is down stays in the
// stores' tables and the refresher finishes it after recovery.
func (c *redisCore) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.jobSig:
		}
		for {
			c.jobsMu.Lock()
			batch := c.jobs
			if len(batch) > c.opt.RefreshBatch {
				batch = batch[:c.opt.RefreshBatch]
				c.jobs = append([]job(nil), c.jobs[c.opt.RefreshBatch:]...)
			} else {
				c.jobs = nil
			}
			c.jobsMu.Unlock()
			if len(batch) == 0 {
				break
			}
			safego.Run(ctx, "session.release", func() { c.runJobs(ctx, batch) })
		}
	}
}

func (c *redisCore) retryLater(j job) {
	time.AfterFunc(jobRetryDelay, func() {
		safego.Run(context.Background(), "session.release_retry", func() { c.enqueue(j) })
	})
}

// runJobs turns queued releases into one pipelined batch.
// While Redis is down the jobs are dropped: their entries stay in the
// tables and the refresher completes them after recovery.
func (c *redisCore) runJobs(ctx context.Context, batch []job) {
	if !c.isHealthy() {
		return
	}
	ops := make([]batchOp, 0, len(batch))
	for _, j := range batch {
		op, ok, busy := j()
		if busy {
			c.retryLater(j)
			continue
		}
		if ok {
			ops = append(ops, op)
		}
	}
	c.runBatch(ctx, "release", ops)
}

// runBatch sends ops as one pipeline and applies the replies. On an outage
// the replies are not applied (the entries stay due and are retried) and it
// reports false.
func (c *redisCore) runBatch(ctx context.Context, op string, ops []batchOp) bool {
	if len(ops) == 0 {
		return true
	}
	defer func() {
		for _, o := range ops {
			o.unlock()
		}
	}()
	cctx, cancel := c.opCtx(ctx)
	defer cancel()
	cmds := make([]redis.Cmder, len(ops))
	_, err := c.pipe(cctx, func(p redis.Pipeliner) {
		for i, o := range ops {
			cmds[i] = o.fill(p)
		}
	})
	if err != nil && !errors.Is(err, redis.Nil) && c.fail(ctx, op, err) {
		return false
	}
	for i, o := range ops {
		o.done(cmds[i])
	}
	return err == nil || errors.Is(err, redis.Nil)
}

// refreshBatches sends ops session.refresh_batch at a time, one pipeline
// each: the cost grows with owned keys / batch size (issue 3 §4).
func (c *redisCore) refreshBatches(ctx context.Context, ops []batchOp) bool {
	for len(ops) > 0 {
		n := min(len(ops), c.opt.RefreshBatch)
		if !c.runBatch(ctx, "refresh", ops[:n]) {
			c.m.RefreshBatches.WithLabelValues("error").Inc()
			for _, o := range ops[n:] {
				o.unlock()
			}
			return false
		}
		c.m.RefreshBatches.WithLabelValues("ok").Inc()
		ops = ops[n:]
	}
	return true
}
