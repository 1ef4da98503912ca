// Refreshes the page's main element every 10 s from the same URL with ?part=main, and reloads
// the plots (a new query string so that caches fetch them again). No page reload, no library.
(function () {
  var main = document.getElementById('main');
  if (!main) return;
  function part() {
    var u = new URL(window.location.href);
    u.searchParams.set('part', 'main');
    return u.toString();
  }
  function refresh() {
    fetch(part(), { cache: 'no-store' })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        main.innerHTML = html;
        var t = Date.now();
        main.querySelectorAll('img').forEach(function (img) {
          var u = new URL(img.src);
          u.searchParams.set('t', t);
          img.src = u.toString();
        });
        main.setAttribute('data-refreshed', String(t));
        main.removeAttribute('data-stale');
      })
      .catch(function (e) { main.setAttribute('data-stale', String(e)); });
  }
  window.setInterval(refresh, 10000);
  window.ipslaRefresh = refresh;
})();
