// Package notifications is the in-app inbox that USER_NOTIFICATION jobs write and the
// API serves: queue.notifications, newest first per user, with a read mark.
package notifications

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgqueue/queue/internal/store"
)

// Notification is a stored notification as the API shows it.
type Notification struct {
	ID        string     `json:"id"`
	UserID    string     `json:"userId"`
	Title     string     `json:"title"`
	Body      string     `json:"body"`
	Type      string     `json:"type"`
	Metadata  jsonRaw    `json:"metadata"`
	CreatedAt Timestamp  `json:"createdAt"`
	ReadAt    *Timestamp `json:"readAt"`
}

// jsonRaw is stored JSON embedded as it is.
type jsonRaw []byte

// MarshalJSON embeds the stored JSON.
func (r jsonRaw) MarshalJSON() ([]byte, error) {
	if len(r) == 0 {
		return []byte("{}"), nil
	}
	return r, nil
}

// Timestamp marshals as the API's time: RFC 3339 with milliseconds, in UTC.
type Timestamp struct{ time.Time }

// MarshalJSON writes the time as 2006-01-02T15:04:05.000Z.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format("2006-01-02T15:04:05.000Z07:00") + `"`), nil
}

func fromRow(r store.QueueNotification) Notification {
	n := Notification{
		ID:        strconv.FormatInt(r.ID, 10),
		UserID:    r.UserID,
		Title:     r.Title,
		Body:      r.Body,
		Type:      r.Type,
		Metadata:  jsonRaw(r.Metadata),
		CreatedAt: Timestamp{r.CreatedAt},
	}
	if r.ReadAt != nil {
		n.ReadAt = &Timestamp{*r.ReadAt}
	}
	return n
}

// Errors of the inbox.
var (
	ErrNotFound      = errors.New("notification not found")
	ErrInvalidCursor = errors.New("invalid cursor")
)

// Listing limits, as for jobs.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// New is a notification to store.
type New struct {
	UserID   string
	Title    string
	Body     string
	Type     string // info when empty
	Metadata []byte // a JSON object; {} when empty
	JobID    string // the job that wrote it, for tracing
}

// Insert stores a notification and returns it as stored.
func Insert(ctx context.Context, conn store.DBTX, n New) (Notification, error) {
	if n.Type == "" {
		n.Type = "info"
	}
	if len(n.Metadata) == 0 {
		n.Metadata = []byte("{}")
	}
	var jobID *string
	if n.JobID != "" {
		jobID = &n.JobID
	}
	row, err := store.New(conn).NotificationInsert(ctx, store.NotificationInsertParams{
		UserID: n.UserID, Title: n.Title, Body: n.Body, Type: n.Type, Metadata: n.Metadata, JobID: jobID,
	})
	if err != nil {
		return Notification{}, fmt.Errorf("store notification: %w", err)
	}
	return fromRow(row), nil
}

// List returns a user's notifications newest first (only unread ones when unreadOnly),
// at most limit (0 means the default; larger than the maximum is capped), starting after
// cursor ("" for the first page). nextCursor is "" on the last page. A cursor that this
// function did not return is ErrInvalidCursor.
func List(ctx context.Context, conn store.DBTX, userID string, unreadOnly bool, limit int, cursor string) ([]Notification, string, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	params := store.NotificationListParams{UserID: userID, UnreadOnly: unreadOnly, MaxRows: int32(limit + 1)}
	if cursor != "" {
		at, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		params.AfterCreatedAt = &at
		params.AfterID = &id
	}
	rows, err := store.New(conn).NotificationList(ctx, params)
	if err != nil {
		return nil, "", fmt.Errorf("list notifications: %w", err)
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1]
		next = encodeCursor(last.CreatedAt, last.ID)
	}
	out := make([]Notification, len(rows))
	for i, r := range rows {
		out[i] = fromRow(r)
	}
	return out, next, nil
}

// MarkRead sets a notification's readAt (kept if already set) and returns it;
// ErrNotFound when no notification has that id.
func MarkRead(ctx context.Context, conn store.DBTX, id string) (Notification, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return Notification{}, ErrNotFound
	}
	row, err := store.New(conn).NotificationMarkRead(ctx, n)
	if errors.Is(err, pgx.ErrNoRows) {
		return Notification{}, ErrNotFound
	}
	if err != nil {
		return Notification{}, fmt.Errorf("mark notification read: %w", err)
	}
	return fromRow(row), nil
}

// The cursor carries the last row's exact sort key (microseconds, as stored).
func encodeCursor(at time.Time, id int64) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d:%d", at.UnixMicro(), id))
}

func decodeCursor(c string) (time.Time, int64, error) {
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

// Channel is the Redis channel a user's notifications are published on.
func Channel(redisPrefix, userID string) string {
	return redisPrefix + "notifications:" + userID
}
