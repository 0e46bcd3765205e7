// Behaviour for every page. Loaded as a file: the Content-Security-Policy forbids
// inline scripts and inline event handlers.
"use strict";

// <form data-confirm="Are you sure?">: ask before it is sent.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
