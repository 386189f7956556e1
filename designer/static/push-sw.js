/* Parcours Web Push service worker: shows the notifications Parcours sends and opens their link.
 *
 * A service worker must come from the site's own origin: put a one-line sw.js on the site,
 *     importScripts("https://parcours.example.com/push/sw.js");
 * and register it (see channels/PUSH.md). The payload is the JSON the push channel encrypts:
 *     {"title", "body", "url"?, "image"?, "icon"?, "tag"}
 * `tag` is the send key: a message delivered twice replaces its notification instead of
 * showing a second one. A subscription the browser renews is sent again by the page snippet
 * on the next visit.
 */
"use strict";

self.addEventListener("push", function (event) {
  var data = {};
  if (event.data) {
    try {
      data = event.data.json();
    } catch (err) {
      data = { body: event.data.text() };
    }
  }
  var options = {
    body: data.body || "",
    tag: data.tag || undefined,
    data: { url: data.url || "" },
  };
  if (data.icon) options.icon = data.icon;
  if (data.image) options.image = data.image;
  event.waitUntil(self.registration.showNotification(data.title || "", options));
});

function safeUrl(raw) {
  // Only http(s) links open; anything else (javascript:, data:) is ignored.
  try {
    var url = new URL(raw, self.location.origin);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch (err) {
    return null;
  }
}

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = safeUrl((event.notification.data || {}).url || "");
  if (!url) return;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (list) {
      for (var i = 0; i < list.length; i++) {
        if (list[i].url === url && "focus" in list[i]) return list[i].focus();
      }
      return self.clients.openWindow ? self.clients.openWindow(url) : undefined;
    })
  );
});
