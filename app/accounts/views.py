from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from chat.services import abuse

from .forms import SignupForm


def signup(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = SignupForm(request.POST)
        if form.is_valid():
            try:
                abuse.allow_signup(abuse.http_client_address(request))
            except abuse.Refused as exc:
                form.add_error(None, exc.message)
                response = render(request, "registration/signup.html", {"form": form}, status=429)
                response["Retry-After"] = str(exc.retry_after)
                return response
            user = form.save()  # None if a look-alike name was taken meanwhile (on the form)
            if user is not None:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                return redirect("chat:index")
    else:
        form = SignupForm()
    return render(request, "registration/signup.html", {"form": form})
