package web

import (
	"strings"
	"testing"
)

func TestTemplatesParse(t *testing.T) {
	pages, err := parseTemplates()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pageNames {
		if pages[p].Lookup("content") == nil || pages[p].Lookup("layout") == nil {
			t.Errorf("page %s lacks content or layout", p)
		}
		src, err := templateFS.ReadFile("templates/" + p + ".html")
		if err != nil {
			t.Fatal(err)
		}
		for _, region := range liveRegions[p] {
			if pages[p].Lookup(region) == nil {
				t.Errorf("page %s: live region %s is not defined", p, region)
			}
			if !strings.Contains(string(src), `data-live="`+region+`"`) {
				t.Errorf("page %s: live region %s is not placed on the page", p, region)
			}
		}
	}
	for p := range liveRegions {
		if pages[p] == nil {
			t.Errorf("live regions for unknown page %s", p)
		}
	}
}
