package jobs

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/notifications"
)

// errNotConfigured fails a job on a process that was not given what the kind needs.
var errNotConfigured = errors.New("this worker is not configured for this job type")

// notificationData is USER_NOTIFICATION's data.
type notificationData struct {
	UserID   string          `json:"userId" validate:"required,min=1,max=128"`
	Title    string          `json:"title" validate:"required,min=1,max=200"`
	Body     string          `json:"body" validate:"required,min=1,max=5000"`
	Type     string          `json:"type" validate:"omitempty,oneof=info warning error success"`
	Metadata kinds.RawObject `json:"metadata"`
}

// NotificationResult is USER_NOTIFICATION's result.
type NotificationResult struct {
	NotificationID string `json:"notificationId"`
	UserID         string `json:"userId"`
	Channel        string `json:"channel"`
	Published      bool   `json:"published"`
}

type notificationHandler struct{ deps Deps }

func notificationKind(deps Deps) kinds.Kind {
	return kinds.Define(TypeUserNotification, (&notificationHandler{deps: deps}).run)
}

func (h *notificationHandler) run(ctx context.Context, job *kinds.Job, d *notificationData) (any, error) {
	if h.deps.Pool == nil {
		return nil, kinds.Permanent(errNotConfigured)
	}
	n, err := notifications.Insert(ctx, h.deps.Pool, notifications.New{
		UserID: d.UserID, Title: d.Title, Body: d.Body, Type: d.Type, Metadata: d.Metadata, JobID: job.ID,
	})
	if err != nil {
		return nil, err
	}
	res := NotificationResult{NotificationID: n.ID, UserID: n.UserID}

	// The row is the truth; the publish only tells listeners early. Redis failing must
	// not fail the job (a retry would store the notification twice).
	if h.deps.Redis != nil {
		res.Channel = notifications.Channel(h.deps.RedisPrefix, d.UserID)
		payload, err := json.Marshal(n)
		if err == nil {
			err = h.deps.Redis.Publish(ctx, res.Channel, payload).Err()
		}
		if err != nil {
			h.deps.jobLog(job).Warn("publish notification", "channel", res.Channel, "err", err)
		} else {
			res.Published = true
		}
	}
	return res, nil
}
