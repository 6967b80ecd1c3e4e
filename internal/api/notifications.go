package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/queue"
)

// listNotifications serves GET /api/notifications?userId=&unread=&limit=&cursor=. The
// store (queue.notifications, written by USER_NOTIFICATION jobs) belongs to internal/jobs.
func (s *Server) listNotifications(c *gin.Context) error {
	v := &queue.ValidationError{}
	userID := c.Query("userId")
	if userID == "" {
		v.Add("userId", "is required")
	}
	unread := false
	if raw, ok := c.GetQuery("unread"); ok && raw != "" {
		b, err := strconv.ParseBool(raw)
		if err != nil {
			v.Add("unread", "must be true or false")
		}
		unread = b
	}
	limit := jobs.DefaultNotificationLimit
	if raw, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > jobs.MaxNotificationLimit {
			v.Add("limit", "must be an integer between 1 and %d", jobs.MaxNotificationLimit)
		}
		limit = n
	}
	if err := v.Err(); err != nil {
		return err
	}
	list, next, err := jobs.ListNotifications(c.Request.Context(), s.deps.Pool, userID, unread, limit, c.Query("cursor"))
	if errors.Is(err, jobs.ErrInvalidCursor) {
		return validation(Detail{Field: "cursor", Message: "is not a cursor this API returned"})
	}
	if err != nil {
		return err
	}
	var cursor *string
	if next != "" {
		cursor = &next
	}
	c.JSON(http.StatusOK, gin.H{"notifications": list, "nextCursor": cursor})
	return nil
}

func (s *Server) readNotification(c *gin.Context) error {
	n, err := jobs.MarkNotificationRead(c.Request.Context(), s.deps.Pool, c.Param("id"))
	if errors.Is(err, jobs.ErrNotFound) {
		return errNotFound("notification not found")
	}
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, n)
	return nil
}
