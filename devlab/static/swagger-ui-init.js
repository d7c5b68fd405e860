// Starts Swagger UI on /docs. A file of its own rather than an inline script, so the page's
// Content-Security-Policy can allow scripts from this origin only. Same config as
// flask-smorest's page: the spec URL and container, then OPENAPI_SWAGGER_UI_CONFIG over them.
window.addEventListener("load", function () {
  var container = document.getElementById("swagger-ui-container");
  var config = { url: container.dataset.specUrl, dom_id: "#swagger-ui-container" };
  var overrides = JSON.parse(container.dataset.config);
  for (var name in overrides) {
    config[name] = overrides[name];
  }
  window.ui = SwaggerUIBundle(config);
});
