from django.urls import path

from . import api, ui_api, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("<str:room_name>/", views.room, name="room"),
]

api_urlpatterns = [
    path("rooms", ui_api.room_list, name="api-rooms"),
    path("rooms/<str:room_name>/messages", api.room_messages, name="api-room-messages"),
]
