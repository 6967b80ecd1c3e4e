package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgqueue/queue/internal/queue"
)

// Error codes.
const (
	codeValidationFailed = "validation_failed"
	codeBadRequest       = "bad_request"
	codeUnauthorized     = "unauthorized"
	codeNotFound         = "not_found"
	codeConflict         = "conflict"
	codePayloadTooLarge  = "payload_too_large"
	codeRateLimited      = "rate_limited"
	codeUnavailable      = "unavailable"
	codeInternal         = "internal"
)

// Detail is one problem with one field of a request.
type Detail = queue.FieldError

// errorBody is the body of every error answer (except /api/ready's).
type errorBody struct {
	Error errorPayload `json:"error"`
}

type errorPayload struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Details []Detail `json:"details,omitempty"`
}

// httpError is an error that already knows its answer. Handlers return it for problems
// of the request itself; everything else goes through respondError's mapping.
type httpError struct {
	status  int
	code    string
	message string
	details []Detail
	// header is set on the answer (Retry-After on 429).
	header map[string]string
}

func (e *httpError) Error() string { return e.code + ": " + e.message }

func errBadRequest(msg string) error {
	return &httpError{status: http.StatusBadRequest, code: codeBadRequest, message: msg}
}

func errUnauthorized() error {
	return &httpError{status: http.StatusUnauthorized, code: codeUnauthorized,
		message: "a valid API key is required (Authorization: Bearer KEY or X-API-Key: KEY)"}
}

func errNotFound(msg string) error {
	return &httpError{status: http.StatusNotFound, code: codeNotFound, message: msg}
}

func errConflict(msg string) error {
	return &httpError{status: http.StatusConflict, code: codeConflict, message: msg}
}

func errTooLarge() error {
	return &httpError{status: http.StatusRequestEntityTooLarge, code: codePayloadTooLarge,
		message: "the request body is larger than 1 MiB"}
}

func errUnavailable(msg string) error {
	return &httpError{status: http.StatusServiceUnavailable, code: codeUnavailable, message: msg}
}

func errRateLimited(retryAfter string) error {
	return &httpError{status: http.StatusTooManyRequests, code: codeRateLimited,
		message: "too many submissions; retry later", header: map[string]string{"Retry-After": retryAfter}}
}

// validation builds a validation_failed error from problems.
func validation(problems ...Detail) error {
	return &queue.ValidationError{Problems: problems}
}

// respondError is the one place where an error becomes an HTTP answer. Only messages this
// package or the engine wrote for the client are shown; anything else is logged with the
// request id and answered with a generic 500, so no SQL or internal detail leaks.
func respondError(c *gin.Context, err error) {
	var (
		he  *httpError
		ve  *queue.ValidationError
		mbe *http.MaxBytesError
	)
	status, body := http.StatusInternalServerError, errorPayload{Code: codeInternal}
	switch {
	case errors.As(err, &he):
		status, body = he.status, errorPayload{Code: he.code, Message: he.message, Details: he.details}
		for k, v := range he.header {
			c.Header(k, v)
		}
	case errors.As(err, &ve):
		status, body = http.StatusBadRequest, errorPayload{Code: codeValidationFailed,
			Message: "the request is invalid; see details", Details: dedupe(ve.Problems)}
	case errors.As(err, &mbe):
		status, body = http.StatusRequestEntityTooLarge, errorPayload{Code: codePayloadTooLarge,
			Message: "the request body is larger than 1 MiB"}
	case errors.Is(err, queue.ErrQueueNotFound):
		status, body = http.StatusNotFound, errorPayload{Code: codeNotFound, Message: "queue not found: it has no jobs, settings or live workers"}
	case errors.Is(err, queue.ErrNotFound):
		status, body = http.StatusNotFound, errorPayload{Code: codeNotFound, Message: "job not found"}
	case errors.Is(err, queue.ErrConflict):
		// The engine's conflict messages are written for the client ("the job is active").
		status, body = http.StatusConflict, errorPayload{Code: codeConflict, Message: err.Error()}
	case errors.Is(err, context.Canceled) && c.Request.Context().Err() != nil:
		// The client went away; nobody reads this answer, but the log should not say 500.
		status, body = 499, errorPayload{Code: codeUnavailable, Message: "request cancelled"}
	case errors.Is(err, context.DeadlineExceeded):
		status, body = http.StatusServiceUnavailable, errorPayload{Code: codeUnavailable,
			Message: "the database did not answer in time"}
	case databaseUnreachable(err):
		// Nothing was stored: the client may retry (with a jobId, safely).
		status, body = http.StatusServiceUnavailable, errorPayload{Code: codeUnavailable,
			Message: "the database is unavailable; retry later"}
		logger(c).Warn("database unavailable", "err", err, "request_id", requestID(c))
	default:
		body.Message = "internal error (request id " + requestID(c) + ")"
		logger(c).Error("request failed", "err", err, "request_id", requestID(c), "route", c.FullPath())
	}
	if status == 499 {
		c.AbortWithStatus(status)
		return
	}
	c.AbortWithStatusJSON(status, errorBody{Error: body})
}

// dedupe keeps the first problem of each field: a field that failed to decode is not
// reported again as missing.
func dedupe(problems []Detail) []Detail {
	seen := make(map[string]bool, len(problems))
	out := make([]Detail, 0, len(problems))
	for _, p := range problems {
		if seen[p.Field] {
			continue
		}
		seen[p.Field] = true
		out = append(out, p)
	}
	return out
}

// handlerFunc is a handler that returns its error instead of writing it.
type handlerFunc func(c *gin.Context) error

// handle adapts a handlerFunc to gin, sending its error through respondError.
func handle(h handlerFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			respondError(c, err)
		}
	}
}

// logger returns the request's logger (set by the logging middleware).
func logger(c *gin.Context) *slog.Logger {
	if l, ok := c.Get(ctxLogger); ok {
		return l.(*slog.Logger)
	}
	return slog.Default()
}

// databaseUnreachable reports a lost or refused database connection, or a server that is
// shutting down or starting: a transient outage, not a bug.
func databaseUnreachable(err error) bool {
	var connect *pgconn.ConnectError
	var pg *pgconn.PgError
	var netErr net.Error
	switch {
	case errors.As(err, &connect), errors.As(err, &netErr), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &pg):
		return strings.HasPrefix(pg.Code, "08") || pg.Code == "57P01" || pg.Code == "57P02" || pg.Code == "57P03"
	}
	return pgconn.SafeToRetry(err)
}
