from django.contrib import admin

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at")
    search_fields = ("user__username", "prefix", "name")
    list_filter = ("created_at",)
    readonly_fields = ("key_hash", "prefix", "created_at")
    raw_id_fields = ("user",)
