package api

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPIDocument is the OpenAPI 3 description of this API. It is kept by hand next to
// the routes; TestOpenAPIMatchesRoutes fails when the two drift apart.
//
//go:embed openapi.json
var openAPIDocument []byte

func serveOpenAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", openAPIDocument)
}
