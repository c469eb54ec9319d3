from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm

from . import usernames
from .forms import lookalike_error
from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at")
    search_fields = ("user__username", "prefix", "name")
    list_filter = ("created_at",)
    readonly_fields = ("key_hash", "prefix", "created_at")
    raw_id_fields = ("user",)


class LookalikeUsernameCheck:
    """The look-alike rule (accounts.usernames) as a form error in the admin too."""

    def clean_username(self):
        parent = getattr(super(), "clean_username", None)
        username = parent() if parent else self.cleaned_data.get("username")
        if username is None:  # refused already
            return None
        if self.instance.pk is not None and username == self.instance.get_username():
            return username  # unchanged: nothing to compare
        existing = usernames.looking_like(username, exclude_pk=self.instance.pk)
        if existing is not None:
            raise lookalike_error(username, existing)
        return username


class UserCreation(LookalikeUsernameCheck, AdminUserCreationForm):
    pass


class UserChange(LookalikeUsernameCheck, UserChangeForm):
    pass


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class LookalikeCheckedUserAdmin(UserAdmin):
    add_form = UserCreation
    form = UserChange
