from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import Blueprint, abort

from devlab.audit.trail import audit
from devlab.auth.access import issue_tokens, login_required
from devlab.auth.schemas import LoginSchema, SignupSchema, TokenSchema, UserSchema
from devlab.extensions import db
from devlab.models import User
from devlab.passwords import spend_verification_time
from devlab.ratelimit import limit_login, limit_signup


class AuthBlueprint(Blueprint):
    # Login takes JSON or a form post; document JSON as the body and add the form below.
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "json_or_form": "application/json",
    }


blp = AuthBlueprint("auth", __name__, description="Sign up, log in, and see who you are.")

LOGIN_FAILED = "Incorrect username or password."


@blp.route("/signup")
class Signup(MethodView):
    @limit_signup
    @blp.arguments(SignupSchema)
    @blp.response(201, UserSchema)
    @blp.alt_response(409, description="The username or email is already registered.")
    def post(self, account):
        """Create an account."""
        user = User(username=account["username"], email=account["email"])
        user.set_password(account["password"])
        db.session.add(user)
        db.session.flush()  # a duplicate raises here, answered with 409 by errors.py
        audit("signup", f"user {user.id} ({user.username})", actor=user)
        return user


@blp.route("/login")
class Login(MethodView):
    @limit_login
    @blp.arguments(LoginSchema, location="json_or_form")
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, description=LOGIN_FAILED)
    @blp.doc(
        requestBody={"content": {"application/x-www-form-urlencoded": {"schema": LoginSchema}}}
    )
    def post(self, credentials):
        """Log in and get a bearer token.

        Send JSON, or a form post as in the OAuth2 password flow. A wrong password and an
        unknown username get the same answer.
        """
        username, password = credentials["username"], credentials["password"]
        user = User.by_username(username)
        if user is None:
            spend_verification_time(password)
        if user is None or not user.check_password(password):
            audit("login_failed", f"attempted username: {username}", actor=user)
            abort(401, message=LOGIN_FAILED, headers={"WWW-Authenticate": "Bearer"})
        audit("login_success", f"user {user.id} ({user.username})", actor=user)
        return issue_tokens(user)


@blp.route("/me")
class Me(MethodView):
    @login_required
    @blp.response(200, UserSchema)
    def get(self):
        """Your own account."""
        return current_user
