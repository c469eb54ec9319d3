from django.urls import path

from . import api, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("<str:room_name>/", views.room, name="room"),
]

api_urlpatterns = [
    path("rooms/<str:room_name>/messages", api.room_messages, name="api-room-messages"),
]
