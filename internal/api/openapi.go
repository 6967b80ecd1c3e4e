package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPIDocument is the OpenAPI 3 description of this API, kept by hand next to the
// routes (TestOpenAPIMatchesRoutes fails when the two drift apart). The job types are
// not written in it: the served document lists the types of the running registry.
//
//go:embed openapi.json
var openAPIDocument []byte

// openAPIFor returns the document with components.schemas.JobType.enum set to types.
func openAPIFor(types []string) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	schemas, _ := doc["components"].(map[string]any)["schemas"].(map[string]any)
	jobType, ok := schemas["JobType"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("openapi.json: components.schemas.JobType is missing")
	}
	jobType["enum"] = types
	return json.MarshalIndent(doc, "", "  ")
}

func (s *Server) serveOpenAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", s.openAPI)
}
