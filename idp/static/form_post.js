// The form_post answer: post the authorization response to the application as soon as
// the page is read (without JavaScript the page offers Continue instead).
document.forms[0].submit();
