package jobs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgqueue/queue/db"
)

// notificationData is USER_NOTIFICATION's data.
type notificationData struct {
	UserID   string    `json:"userId" validate:"required,min=1,max=128"`
	Title    string    `json:"title" validate:"required,min=1,max=200"`
	Body     string    `json:"body" validate:"required,min=1,max=5000"`
	Type     string    `json:"type" validate:"omitempty,oneof=info warning error success"`
	Metadata rawObject `json:"metadata"`
}

// ValidateNotification checks USER_NOTIFICATION data.
var ValidateNotification = validatorFor[notificationData](nil)

// Notification is a stored notification as the API shows it.
type Notification struct {
	ID        string          `json:"id"`
	UserID    string          `json:"userId"`
	Title     string          `json:"title"`
	Body      string          `json:"body"`
	Type      string          `json:"type"`
	Metadata  json.RawMessage `json:"metadata"`
	CreatedAt Timestamp       `json:"createdAt"`
	ReadAt    *Timestamp      `json:"readAt"`
}

// Timestamp marshals as the API's time: RFC 3339 with milliseconds, in UTC.
type Timestamp struct{ time.Time }

// MarshalJSON writes the time as 2006-01-02T15:04:05.000Z.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format("2006-01-02T15:04:05.000Z07:00") + `"`), nil
}

func notificationFromRow(r db.QueueNotification) Notification {
	n := Notification{
		ID:        strconv.FormatInt(r.ID, 10),
		UserID:    r.UserID,
		Title:     r.Title,
		Body:      r.Body,
		Type:      r.Type,
		Metadata:  json.RawMessage(r.Metadata),
		CreatedAt: Timestamp{r.CreatedAt},
	}
	if r.ReadAt != nil {
		n.ReadAt = &Timestamp{*r.ReadAt}
	}
	return n
}

// Errors of the notification functions the API calls.
var (
	ErrNotFound      = errors.New("notification not found")
	ErrInvalidCursor = errors.New("invalid cursor")
)

// Listing limits, as for jobs.
const (
	DefaultNotificationLimit = 50
	MaxNotificationLimit     = 500
)

// ListNotifications returns a user's notifications newest first (only unread ones when
// unreadOnly), at most limit (0 means the default; larger than the maximum is capped),
// starting after cursor (""for the first page). nextCursor is "" on the last page. A
// cursor that this function did not return is ErrInvalidCursor.
func ListNotifications(ctx context.Context, conn db.DBTX, userID string, unreadOnly bool, limit int, cursor string) ([]Notification, string, error) {
	if limit <= 0 {
		limit = DefaultNotificationLimit
	}
	limit = min(limit, MaxNotificationLimit)
	params := db.NotificationListParams{UserID: userID, UnreadOnly: unreadOnly, MaxRows: int32(limit + 1)}
	if cursor != "" {
		at, id, err := decodeNotificationCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		params.AfterCreatedAt = &at
		params.AfterID = pgtype.Int8{Int64: id, Valid: true}
	}
	rows, err := db.New(conn).NotificationList(ctx, params)
	if err != nil {
		return nil, "", fmt.Errorf("list notifications: %w", err)
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1]
		next = encodeNotificationCursor(last.CreatedAt, last.ID)
	}
	out := make([]Notification, len(rows))
	for i, r := range rows {
		out[i] = notificationFromRow(r)
	}
	return out, next, nil
}

// MarkNotificationRead sets a notification's readAt (kept if already set) and returns it;
// ErrNotFound when no notification has that id.
func MarkNotificationRead(ctx context.Context, conn db.DBTX, id string) (Notification, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return Notification{}, ErrNotFound
	}
	row, err := db.New(conn).NotificationMarkRead(ctx, n)
	if errors.Is(err, pgx.ErrNoRows) {
		return Notification{}, ErrNotFound
	}
	if err != nil {
		return Notification{}, fmt.Errorf("mark notification read: %w", err)
	}
	return notificationFromRow(row), nil
}

// The cursor carries the last row's exact sort key (microseconds, as stored).
func encodeNotificationCursor(at time.Time, id int64) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d:%d", at.UnixMicro(), id))
}

func decodeNotificationCursor(c string) (time.Time, int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, 0, ErrInvalidCursor
	}
	us, idText, ok := strings.Cut(string(b), ":")
	micros, err1 := strconv.ParseInt(us, 10, 64)
	id, err2 := strconv.ParseInt(idText, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return time.Time{}, 0, ErrInvalidCursor
	}
	return time.UnixMicro(micros), id, nil
}

// NotificationChannel is the Redis channel a user's notifications are published on.
func NotificationChannel(redisPrefix, userID string) string {
	return redisPrefix + "notifications:" + userID
}

// NotificationResult is USER_NOTIFICATION's result.
type NotificationResult struct {
	NotificationID string `json:"notificationId"`
	UserID         string `json:"userId"`
	Channel        string `json:"channel"`
	Published      bool   `json:"published"`
}

type notificationHandler struct{ deps Deps }

func (h *notificationHandler) Handle(ctx context.Context, job *Job) (any, error) {
	d, problems := parseData[notificationData](job.Data, nil)
	if problems != nil {
		return nil, invalidData(problems)
	}
	if h.deps.Pool == nil {
		return nil, Permanent(errNotConfigured)
	}
	typ := d.Type
	if typ == "" {
		typ = "info"
	}
	metadata := []byte(d.Metadata)
	if metadata == nil {
		metadata = []byte("{}")
	}
	jobID := job.ID
	row, err := db.New(h.deps.Pool).NotificationInsert(ctx, db.NotificationInsertParams{
		UserID: d.UserID, Title: d.Title, Body: d.Body, Type: typ, Metadata: metadata, JobID: &jobID,
	})
	if err != nil {
		return nil, fmt.Errorf("store notification: %w", err)
	}
	n := notificationFromRow(row)
	res := NotificationResult{NotificationID: n.ID, UserID: n.UserID}

	// The row is the truth; the publish only tells listeners early. Redis failing must
	// not fail the job (a retry would store the notification twice).
	if h.deps.Redis != nil && h.deps.Config != nil {
		res.Channel = NotificationChannel(h.deps.Config.RedisPrefix, d.UserID)
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
