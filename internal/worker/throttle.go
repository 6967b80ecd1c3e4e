package worker

import (
	"log/slog"
	"sync"
	"time"
)

// throttledLog logs a recurring failure (the database is down) once per interval with
// the number of repeats, instead of once per attempt.
type throttledLog struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

func (t *throttledLog) warn(log *slog.Logger, msg string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if time.Since(t.last) < t.every {
		t.suppressed++
		return
	}
	if t.suppressed > 0 {
		args = append(args, "repeats_since_last_log", t.suppressed)
	}
	log.Warn(msg, args...)
	t.last, t.suppressed = time.Now(), 0
}

// reset lets the next failure be logged at once (called after a success).
func (t *throttledLog) reset() {
	t.mu.Lock()
	t.last, t.suppressed = time.Time{}, 0
	t.mu.Unlock()
}
