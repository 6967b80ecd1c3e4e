package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/pgqueue/queue/internal/notifications"
	"github.com/pgqueue/queue/internal/queue"
)

// listNotifications serves GET /api/notifications?userId=&unread=&limit=&cursor=. The
// inbox (queue.notifications, written by USER_NOTIFICATION jobs) is internal/notifications.
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
	limit := notifications.DefaultLimit
	if raw, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > notifications.MaxLimit {
			v.Add("limit", "must be an integer between 1 and %d", notifications.MaxLimit)
		}
		limit = n
	}
	if err := v.Err(); err != nil {
		return err
	}
	list, next, err := notifications.List(c.Request.Context(), s.deps.Pool, userID, unread, limit, c.Query("cursor"))
	if errors.Is(err, notifications.ErrInvalidCursor) {
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
	n, err := notifications.MarkRead(c.Request.Context(), s.deps.Pool, c.Param("id"))
	if errors.Is(err, notifications.ErrNotFound) {
		return errNotFound("notification not found")
	}
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, n)
	return nil
}
